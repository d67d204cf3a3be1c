#!/usr/bin/env bash
# The whole pipeline on CUDA in a few minutes: train, saliency mask, masked unlearning, evaluation,
# then the performance figures. Usage: bash scripts/gpu_check.sh [out_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check}
common=(--dataset digits --arch resnet20s --device cuda --num_indexes_to_replace 135)
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())"
time python -u main_baseline.py --dataset digits --arch resnet20s --device cuda --epochs 15 --decreasing_lr 8,12 \
  --save_dir "$out" --amp
time python -u main_imp.py --prune saliency "${common[@]}" --model_path "$out/checkpoint.pt" --mask_ratios 0.5 \
  --save_dir "$out/masks"
for method in FT GA RL FT_prune fisher_new wfisher; do
  python -u main_forget.py "${common[@]}" --save_dir "$out" --unlearn "$method" --mask "$out/masks/with_0.5.pt" \
    --unlearn_lr 0.01 --unlearn_epochs 5 --alpha 1e-5 --amp | tail -1
done
python -u main_forget.py "${common[@]}" --save_dir "$out" --unlearn RL --unlearn_epochs 5 | tail -1
for method in NegGrad_plus SCRUB CF_k EU_k SSD BE BS SalUn_soft; do
  python -u main_forget.py "${common[@]}" --save_dir "$out" --unlearn "$method" --mask_ratio 0.5 \
    --unlearn_lr 0.003 --unlearn_epochs 3 | tail -1
done
# DistributedDataParallel under torchrun with NCCL, one GPU: training and masked unlearning
time torchrun --standalone --nproc_per_node 1 main_baseline.py --dataset digits --arch resnet20s --device cuda \
  --epochs 3 --save_dir "$out/ddp"
torchrun --standalone --nproc_per_node 1 main_forget.py "${common[@]}" --save_dir "$out/ddp" --unlearn FT \
  --mask "$out/masks/with_0.5.pt" --unlearn_epochs 2 | tail -1
python -u scripts/perf.py --device cuda --sections 1,2,3,4 --amp
