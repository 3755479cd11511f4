#!/usr/bin/env bash
# Broadcast segment scores vs learned guidance on PEP8 at small scale (see README.md). From the repo root:
#   bash experiments/guidance_pep8/run_all.sh            # all runs, then the analysis
#   bash experiments/guidance_pep8/run_all.sh rwr_guidance analyse   # selected steps
set -euo pipefail
cd "$(dirname "$0")/../.."
source .venv/bin/activate
# settings: conf/experiment/guidance_pep8.yaml (broadcast segment scores) and guidance_pep8_learned.yaml
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=1   # tiny models on a shared CPU: one intra-op thread is several times faster
OUT=${OUT:-outputs/guidance_pep8}
RES=experiments/guidance_pep8/results
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(mle rwr_segment rwr_segment_sharp rwr_guidance aggregations analyse)
run() { /usr/bin/time -f "$1: %e s wall, %U s user, %S s sys" python -m phf.train \
          +experiment="$2" hydra.run.dir="$OUT/$1" "${@:3}"; }
for s in "${STEPS[@]}"; do
  case $s in
    mle)              run mle guidance_pep8 objective=mle ;;
    rwr_segment)      run rwr_segment guidance_pep8 objective=rwr objective.beta=1.0 ;;
    rwr_segment_sharp) run rwr_segment_sharp guidance_pep8 objective=rwr objective.beta=0.01 ;;
    rwr_guidance)     run rwr_guidance guidance_pep8_learned objective=rwr objective.beta=1.0 ;;
    guided_mle_batch) run guided_mle_batch guidance_pep8_learned objective=guided_mle objective.normalize=batch ;;  # not in the default list (CPU budget)
    aggregations)     /usr/bin/time -f "aggregations: %e s wall, %U s user, %S s sys" \
                        python experiments/guidance_pep8/aggregations.py --out $RES/aggregations.json ;;
    analyse)          /usr/bin/time -f "analyse: %e s wall, %U s user, %S s sys" \
                        python experiments/guidance_pep8/analyse.py $OUT/{mle,rwr_segment,rwr_segment_sharp,rwr_guidance} \
                        --out $RES/runs.json ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
