#!/usr/bin/env bash
# Every GPU figure of benchmarks/results.md in one call on a lent GPU machine: the matmul peak and the
# attention kernels at the video's shapes, streaming generation (DiT only, Wan VAE, TAEHV; compiled),
# the frame-wise mode, the bf16-vs-float32 check, the two-minute 1.3B stream and the 14B model.
#   bash benchmarks/gpu_suite.sh OUT [parts]     # parts: attention,generation,sdpa,framewise,precision,long,14b
# Each part appends JSON lines to OUT/*.jsonl and its log to OUT/suite.log; a failed part does not stop the rest.
set -u
OUT=${1:?usage: gpu_suite.sh OUT [parts]}
PARTS=${2:-attention,generation,sdpa,framewise,precision,long,14b}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
began=$(date +%s)
part() {  # name, then the command
  local name=$1; shift
  case ",$PARTS," in *",$name,"*) ;; *) return 0 ;; esac
  echo "== [$(( $(date +%s) - began ))s] $name: $*"
  "$@" || echo "== $name failed ($?)"
}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
  part attention python3 benchmarks/bench_attention.py --json "$OUT/attention.jsonl"
  part generation python3 benchmarks/bench_generation.py --backend cudnn --compile --decoders none,wan,taehv \
    --json "$OUT/generation.jsonl"
  part sdpa python3 benchmarks/bench_generation.py --backend sdpa --compile --decoders none \
    --json "$OUT/generation.jsonl"
  part framewise python3 benchmarks/bench_generation.py --backend cudnn --compile --frame-wise --decoders none,taehv \
    --json "$OUT/generation.jsonl"
  part precision python3 benchmarks/bench_generation.py --decoders none --repeats 1 --check-fp32 \
    --json "$OUT/generation.jsonl"
  part long python3 benchmarks/long_video_device.py --seconds 120 --compile --decoder taehv --backend cudnn \
    --json "$OUT/long_video.jsonl"
  part 14b python3 benchmarks/bench_generation.py --size wan2.1-t2v-14b --backend cudnn --compile --decoders none \
    --repeats 1 --json "$OUT/generation.jsonl"
  echo "== [$(( $(date +%s) - began ))s] done"
} 2>&1 | tee -a "$OUT/suite.log"
