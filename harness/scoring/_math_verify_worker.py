"""Child process for ``harness.scoring.math_answers.MathVerifier``: one JSON request per stdin line
(``gold`` and ``prediction``, LaTeX), one JSON reply per stdout line.

math-verify bounds its own parsing and comparison with ``signal.alarm``, which only works in a main
thread; here every call runs in this process's main thread, so those timeouts work wherever the harness
calls from. The parent adds a hard timeout on top for work that no signal can interrupt.
"""

import json
import logging
import sys

from math_verify import parse, verify

# math-verify logs every timeout and parse failure; the reply carries the outcome instead.
logging.disable(logging.CRITICAL)

for line in sys.stdin:
    request = json.loads(line)
    gold = parse(request["gold"])
    prediction = parse(request["prediction"])
    reply = {
        # verify is not symmetric: the gold answer must come first.
        "correct": bool(verify(gold, prediction)),
        "gold": [str(value) for value in gold],
        "prediction": [str(value) for value in prediction],
    }
    sys.stdout.write(json.dumps(reply, allow_nan=False) + "\n")
    sys.stdout.flush()
