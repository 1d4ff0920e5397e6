#!/usr/bin/env bash
# Fail loudly (one line, exit 1) unless the test data the suite uses is all there: without it
# the data tests skip and CI would pass having tested much less.
# Usage: .ci/check_data.sh [DATA_DIR]   (default: ../shared/data beside the checkout)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-$root/../shared/data}"
problems=()

count_png() { find "$1" -maxdepth 1 -type f -name '*.png' 2>/dev/null | wc -l; }

if [ ! -d "$data" ]; then
  echo "ci: error: test data folder $data is missing (the tests need ../shared/data beside the checkout)" >&2
  exit 1
fi
# CamVid (SegNet layout): split -> images expected in it and in its annotations
for split_n in train:367 val:101 test:233; do
  split="${split_n%%:*}" n="${split_n##*:}"
  for folder in "$split" "${split}annot"; do
    have=$(count_png "$data/camvid/$folder")
    [ "$have" -eq "$n" ] || problems+=("camvid/$folder has $have of $n images")
  done
done
for f in videos/udacity_lanelines_solidWhiteRight.mp4 \
         videos/camvid_0016E5_val_15fps.mp4 \
         videos/regions/udacity_lanelines_solidWhiteRight.json \
         weights/espnetv2_cityscapes/espnetv2_s_0.5_city_1024x512.pth \
         weights/espnetv2_cityscapes/espnetv2_s_1.0_city_1024x512.pth \
         weights/espnetv2_cityscapes/espnetv2_s_1.5_city_1024x512.pth \
         weights/espnetv2_cityscapes/espnetv2_s_2.0_city_1024x512.pth \
         weights/mobilenetv1_0.25_imagenet/model_best.pth.tar; do
  [ -s "$data/$f" ] || problems+=("$f is missing or empty")
done

if [ "${#problems[@]}" -gt 0 ]; then
  more=""
  [ "${#problems[@]}" -gt 1 ] && more=" (and $(( ${#problems[@]} - 1 )) more problem(s))"
  echo "ci: error: test data at $data is incomplete: ${problems[0]}$more" >&2
  exit 1
fi
echo "ci: test data complete at $data"
