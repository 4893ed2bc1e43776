#!/bin/bash
# orthrus-bench on N nodes x 8 GPUs with plain torchrun: run this script on every node, with the same
# MASTER_ADDR (node 0's address) and NNODES, and NODE_RANK 0..N-1. OUT must be on a filesystem every node
# sees. Rerun with RESUME=1 after a failure: every shard continues where it stopped.
#
#   node 0:  MASTER_ADDR=10.0.0.1 NNODES=2 NODE_RANK=0 examples/torchrun-multinode.sh
#   node 1:  MASTER_ADDR=10.0.0.1 NNODES=2 NODE_RANK=1 examples/torchrun-multinode.sh
set -euo pipefail

: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}" "${NNODES:?set NNODES}" "${NODE_RANK:?set NODE_RANK}"
OUT=${OUT:-results/orthrus-8b}
MODEL=${MODEL:-chiennv/Orthrus-Qwen3-8B}
SUITES=${SUITES:-gsm8k,math500,aime24,aime25,humaneval,mbpp,pseudo2code,livecodebench}
METHODS=${METHODS:-ar,ar-hf,ar-hf:cache=static,orthrus,orthrus:cache=dynamic,eagle3,dflash,pld}

torchrun --nnodes "$NNODES" --node-rank "$NODE_RANK" --nproc-per-node "${GPUS_PER_NODE:-8}" \
  --master-addr "$MASTER_ADDR" --master-port "${MASTER_PORT:-29517}" \
  -m harness.cli run --model "$MODEL" --dtype bfloat16 --device cuda \
  --suite "$SUITES" --methods "$METHODS" --out "$OUT" ${RESUME:+--resume}
