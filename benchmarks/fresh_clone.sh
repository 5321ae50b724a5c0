#!/usr/bin/env bash
# The README's timings, measured the way a newcomer meets them: clone, set up, run the demo, run the tests.
#
#   benchmarks/fresh_clone.sh [--source DIR] [--output FILE] [--skip-demo] [--skip-tests]
#
# Clones DIR (default: this repository, its committed HEAD) into a new temporary directory, then times
#   1. `make setup`  (the virtual environment, one pip install),
#   2. `make demo`   (with .venv present, as the README states it),
#   3. `.ci/run`     (`make test` with its exit status checked, as CI runs it),
# sampling the 1-minute load average every 5 s. Writes a JSON record (default
# benchmarks/results/fresh_clone.json in the source repository) and prints a Markdown summary: commit,
# date, nproc, CPU model, and per stage the wall seconds and the load before, during (min-max) and after;
# plus the demo's own stage_seconds, its denoiser speed probe and pytest's summary line. The README quotes this output and nothing
# else. Any other process on the machine slows both torch jobs, so the load is part of every number.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
source_dir="$here"
output=""
run_demo=1
run_tests=1
while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --skip-demo) run_demo=0; shift ;;
    --skip-tests) run_tests=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "fresh_clone.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
output="${output:-$source_dir/benchmarks/results/fresh_clone.json}"

work="$(mktemp -d "${TMPDIR:-/tmp}/pluralign-fresh.XXXXXX")"
clone="$work/pluralign"
git clone --quiet "$source_dir" "$clone"
cd "$clone"
echo "fresh_clone: $(git rev-parse --short HEAD) cloned into $clone" >&2

# the load sampler: one "epoch load1" line every 5 s until this script exits
loadlog="$work/load.log"
( while :; do echo "$(date +%s) $(cut -d' ' -f1 /proc/loadavg)" >> "$loadlog"; sleep 5; done ) &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT

stages="$work/stages.tsv"
: > "$stages"
stage() {  # stage NAME LOGFILE COMMAND...: time one stage; its log goes to LOGFILE
  local name="$1" log="$2"; shift 2
  local before start rc
  before="$(cut -d' ' -f1 /proc/loadavg)"
  start="$(date +%s.%N)"
  echo "fresh_clone: $name: $* (log: $log)" >&2
  set +e; "$@" > "$log" 2>&1; rc=$?; set -e
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$start" "$(date +%s.%N)" "$before" "$(cut -d' ' -f1 /proc/loadavg)" "$rc" >> "$stages"
  if [ "$rc" -ne 0 ]; then echo "fresh_clone: $name failed (exit $rc); last lines of $log:" >&2; tail -20 "$log" >&2; fi
  return 0
}

started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
stage setup "$work/setup.log" make setup
[ "$run_demo" = 1 ] && stage demo "$work/demo.log" make demo
[ "$run_tests" = 1 ] && stage tests "$work/tests.log" bash .ci/run
kill "$sampler" 2>/dev/null || true

mkdir -p "$(dirname "$output")"
python3 - "$work" "$clone" "$started" "$output" <<'EOF'
import json, os, platform, re, sys
from pathlib import Path

work, clone, started, output = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
samples = [tuple(map(float, line.split())) for line in (work / "load.log").read_text().split("\n") if line.strip()]
cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")), platform.processor() or "unknown")
record = {
    "commit": os.popen(f"git -C {clone} rev-parse --short HEAD").read().strip(),
    "started_utc": started, "nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "stages": {},
}
for line in (work / "stages.tsv").read_text().splitlines():
    name, t0, t1, before, after, rc = line.split("\t")
    t0, t1 = float(t0), float(t1)
    during = [v for t, v in samples if t0 <= t <= t1]
    record["stages"][name] = {"wall_seconds": round(t1 - t0, 1), "exit_status": int(rc),
                              "load_before": float(before), "load_after": float(after),
                              "load_during": [min(during), max(during)] if during else None}
demo = clone / "outputs" / "demo" / "results.json"
if demo.is_file():
    r = json.loads(demo.read_text())
    record["demo"] = {"wall_seconds": r.get("wall_seconds"), "stage_seconds": r.get("stage_seconds"),
                      "denoiser_ms_per_latent": r.get("denoiser_ms_per_latent")}
tests_log = work / "tests.log"
if tests_log.is_file():
    summary = [line for line in tests_log.read_text().splitlines() if re.search(r"\d+ (passed|failed)", line)]
    record["tests"] = {"pytest_summary": summary[-1].strip("= ") if summary else None}
output.write_text(json.dumps(record, indent=1) + "\n")

print(f"Fresh clone of `{record['commit']}`, started {record['started_utc']}, nproc {record['nproc']} ({cpu}):\n")
print("| stage | wall | load before / during (min–max) / after | exit |")
print("|---|---:|---|---:|")
for name, s in record["stages"].items():
    d = "–" if s["load_during"] is None else f"{s['load_during'][0]:.2f}–{s['load_during'][1]:.2f}"
    print(f"| {name} | {s['wall_seconds']:.0f} s | {s['load_before']:.2f} / {d} / {s['load_after']:.2f} | {s['exit_status']} |")
if "demo" in record:
    st = record["demo"]["stage_seconds"] or {}
    print("\ndemo stages (results.json): " + ", ".join(f"{k} {v:.0f} s" for k, v in st.items()))
    speed = record["demo"].get("denoiser_ms_per_latent") or {}
    if speed:
        print("denoiser speed (results.json): " + ", ".join(f"{k} {v:.2f} ms per latent" for k, v in speed.items()))
if record.get("tests", {}).get("pytest_summary"):
    print(f"pytest: {record['tests']['pytest_summary']}")
print(f"\nrecord: {output}; logs: {work}")
sys.exit(1 if any(s["exit_status"] for s in record["stages"].values()) else 0)
EOF
