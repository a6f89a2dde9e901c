#!/usr/bin/env bash
# A long Revela run on one GPU at the paper's B = 16, L = 160 (benchmarks/suite_gpu_long.json): a 40-step
# timing run, then max_steps = steps/s x TRAIN_S (rounded down to 100, 200..8000) with a warm-up over the
# first 5% and a cosine decay over the last 20%. Evaluate the retriever it leaves with
# `benchmarks/quality.py --suite --retriever LABEL=$RUN/retriever`.
#
#   LM=~/.cache/revela_hf/smollm2-135m-instruct-0.1.2 DATA=corpus-B16-L160 RUN=/tmp/long TRAIN_S=360 \
#       bash benchmarks/gpu_long_run.sh
# (DATA from `revela prepare ... --group-size 16 --strategy interleave --interleave-width 8 --max-tokens 160
# --tokenizer $LM`; the retriever is the LM cut to 6 layers, `smollm2_path(num_hidden_layers=6)`.)
set -euo pipefail
: "${LM:?a causal LM folder}" "${DATA:?a revela prepare folder}" "${RUN:?an output folder}"
RETRIEVER=${RETRIEVER:-$LM-L6}; TRAIN_S=${TRAIN_S:-300}
common=(--data "$DATA" --lm "$LM" --retriever "$RETRIEVER" --bf16 --max_length 160 --retriever_max_length 160
        --learning_rate 3e-4 --report_to none --seed 0 --dataloader_num_workers 4
        --base_model HuggingFaceTB/SmolLM2-135M-Instruct)
revela train "${common[@]}" --max_steps 40 --warmup_steps 1 --lr_scheduler_type constant --save_steps 1000 \
    --logging_steps 10 --output_dir "$RUN-timing" 2>&1 | tee "$RUN-timing.log"
steps=$(python3 -c "import re, sys; sps = float(re.findall(r\"'train_steps_per_second': '?([0-9.]+)\", open(sys.argv[1]).read())[-1]); print(max(200, min(int(sps * $TRAIN_S) // 100 * 100, 8000)))" "$RUN-timing.log")
echo "max_steps $steps"
revela train "${common[@]}" --max_steps "$steps" --warmup_steps $((steps / 20)) --lr_scheduler_type warmup_stable_decay \
    --lr_scheduler_kwargs "{\"num_decay_steps\": $((steps / 5))}" --save_steps $((steps / 4)) \
    --logging_steps $((steps / 50)) --output_dir "$RUN" 2>&1 | tee "$RUN.log"
