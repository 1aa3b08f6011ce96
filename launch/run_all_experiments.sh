#!/usr/bin/env bash
# Every row of the Telepathy seed's results table (seed 000, shared/spec/telepathy.md "Reported results"), through
# latentjax's launchers:
#   bridge        SST-2, AG News                      launch/train.py --config=configs/telepathy/{sst2,ag_news}.py
#   bridge + token ablation (16/32/64/128)           launch/telepathy_ablation.py on banking77.py and passkey.py
#                 (K=16 is the Banking77 / passkey bridge row of the table)
#   baselines     receiver text, sender text, few-shot, text relay on SST-2, AG News, Banking77
#                                                     launch/telepathy_baseline.py
#   prompt tuning (K=8 soft prompt on the receiver, no sender) on SST-2, AG News  launch/train.py
#                 --config=configs/telepathy/prompt_tuning.py:base={sst2,ag_news}
# then prints one table of every result found under --out (launch/telepathy_table.py).
#
# Usage (flags override the environment variables of the same meaning):
#   bash launch/run_all_experiments.sh [--sender DIR] [--receiver DIR] [--out DIR] [--only LIST] [--dry-run]
#                                      [--python EXE] [-- EXTRA --config.x=y OVERRIDES FOR EVERY RUN]
#   SENDER=/models/Llama-3.1-8B-Instruct RECEIVER=/models/Mistral-7B-Instruct-v0.3 OUT=runs/telepathy \
#       bash launch/run_all_experiments.sh
#   DRY_RUN=1 bash launch/run_all_experiments.sh      # print the commands, run nothing, create nothing
# --only: comma-separated subset of sst2, ag_news, banking77, passkey, baselines, prompt_tuning, table
#   (e.g. --only sst2 runs the SST-2 bridge and SST-2 baselines).
# Defaults: the seed's pair (Llama-3.1-8B-Instruct sender, Mistral-7B-Instruct-v0.3 receiver) under /models.
# Each configuration is the seed's (headline protocol for SST-2 / AG News; see each config's docstring); evaluation
# sets are the configs' (SST-2 / AG News: first 200 rows as the seed; Banking77: the whole test split, not the
# seed's 5-intent slice; add `-- --config.eval.final_num_samples=200` for that slice, stated as such).
# Finished runs are skipped or resumed when the script is started again with the same --out.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SENDER="${SENDER:-/models/Llama-3.1-8B-Instruct}"
RECEIVER="${RECEIVER:-/models/Mistral-7B-Instruct-v0.3}"
OUT="${OUT:-runs/telepathy}"
ONLY="${ONLY:-all}"
DRY_RUN="${DRY_RUN:-0}"
PYTHON="${PYTHON:-python}"
TOKENS="${TOKENS:-16,32,64,128}"
BASELINES="${BASELINES:-receiver_text,sender_text,few_shot,text_relay}"
EXTRA=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --sender) SENDER="$2"; shift 2 ;;
    --receiver) RECEIVER="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --tokens) TOKENS="$2"; shift 2 ;;
    --baselines) BASELINES="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

wanted() { [[ ",$ONLY," == *",all,"* || ",$ONLY," == *",$1,"* ]]; }

# Print the command (shell-quoted, prefixed by "+ "), then run it unless this is a dry run.
run() {
  local a line='+'
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then line+=" $a"; else line+=" $(printf '%q' "$a")"; fi
  done
  printf '%s\n' "$line"
  if [[ "$DRY_RUN" != 1 ]]; then (cd "$HERE" && "$@"); fi
}

MODELS=("--config.model.sender.path=$SENDER" "--config.model.receiver.path=$RECEIVER")
if [[ "$DRY_RUN" != 1 ]]; then
  mkdir -p "$OUT"
  OUT="$(cd "$OUT" && pwd)"
  for d in "$SENDER" "$RECEIVER"; do
    [[ -d "$d" ]] || { echo "error: model folder $d does not exist (set --sender/--receiver)" >&2; exit 2; }
  done
fi

# Bridge rows: SST-2 and AG News (K=8, the seed's headline protocol).
for task in sst2 ag_news; do
  if wanted "$task"; then
    run "$PYTHON" launch/train.py "--config=configs/telepathy/$task.py" "--workdir=$OUT/${task}_bridge" \
      "--config.eval.output_dir=$OUT/${task}_bridge/eval" "${MODELS[@]}" "${EXTRA[@]}"
  fi
done

# Banking77 and passkey: the bridge rows are the K=16 runs of the token ablation.
for task in banking77 passkey; do
  if wanted "$task"; then
    run "$PYTHON" launch/telepathy_ablation.py "--config=configs/telepathy/$task.py" "--out=$OUT/${task}_ablation" \
      "--tokens=$TOKENS" "${MODELS[@]}" "${EXTRA[@]}"
  fi
done

# Text baselines on the bridge's evaluation rows of each classification task.
for task in sst2 ag_news banking77; do
  if wanted baselines || wanted "$task"; then
    run "$PYTHON" launch/telepathy_baseline.py "--config=configs/telepathy/$task.py" "--baseline=$BASELINES" \
      "--out=$OUT/${task}_baselines" "${MODELS[@]}" "${EXTRA[@]}"
  fi
done

# Prompt tuning (a learned soft prompt on the receiver, no sender), trained through the same loop.
if wanted prompt_tuning; then
  if [[ -f "$HERE/configs/telepathy/prompt_tuning.py" ]]; then
    for task in sst2 ag_news; do
      run "$PYTHON" launch/train.py "--config=configs/telepathy/prompt_tuning.py:base=$task" \
        "--workdir=$OUT/${task}_prompt_tuning" "--config.eval.output_dir=$OUT/${task}_prompt_tuning/eval" \
        "${MODELS[@]}" "${EXTRA[@]}"
    done
  else
    echo "note: configs/telepathy/prompt_tuning.py is absent; prompt-tuning rows skipped" >&2
  fi
fi

if wanted table; then
  run "$PYTHON" launch/telepathy_table.py "--runs=$OUT"
fi
