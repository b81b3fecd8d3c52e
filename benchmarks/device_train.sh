#!/usr/bin/env bash
# A GPU training burst on the lent device machine, as one prepared command (its device time is short and
# includes the machine's start). Build the kit here first (python benchmarks/device_kit.py), then call the
# device tool with
#   command: bash benchmarks/device_train.sh configs/nvc-lite-gpu1.toml 420      timeout_s: 540
#   carry:   [".devkit"]
# It installs the kit's packages under /tmp/site, trains for at most SECONDS (the trainer exports atomically
# every export_every steps, so stopping it loses at most that many), and leaves under $OUT the log, the
# exported weights split into parts under the 16 MiB a returned file may have, and their SHA-256 (with keep_exports,
# also the average of the last four kept exports, avg.safetensors.part*, likewise). Back here:
#   cd <a scratch folder> && cat <files_at>/nvc-lite.safetensors.part* > nvc-lite.safetensors \
#     && sha256sum -c <files_at>/nvc-lite.safetensors.sha256      (the .sha256 names nvc-lite.safetensors)
set -uo pipefail
cfg=${1:?usage: device_train.sh CONFIG SECONDS}
budget=${2:?usage: device_train.sh CONFIG SECONDS}
dest=${OUT:?OUT is not set: run this through the device tool}
[ -d .devkit/wheels ] || { echo "device_train: .devkit/wheels missing: build it with benchmarks/device_kit.py and carry .devkit" >&2; exit 2; }

python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .devkit/wheels/* \
  > "$dest/install.log" 2>&1 || { tail -20 "$dest/install.log"; exit 2; }
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
python3 -c "import torch, compressai, av, construct; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'compressai', compressai.__version__, 'av', av.__version__)" || exit 2

# first the one check that needs a GPU (streams coded on CPU decode exactly on CUDA and back; tests/test_exact.py),
# at most 120 s, its summary in the output (first run on a lent H200 before runs 34 and 35: passed)
timeout 120 python3 -m pytest tests/test_exact.py -q -p no:cacheprovider -k cuda 2>&1 | tail -3

timeout --signal=INT --kill-after=30 "$budget" python3 -m nvc.train "$cfg" 2>&1 | tail -c 200000 > "$dest/train.log"
echo "trainer exit: ${PIPESTATUS[0]} (124: stopped at the time budget)"
tail -3 "$dest/train.log"

read -r out model < <(python3 -c "import sys; from nvc.train import TrainConfig; c = TrainConfig.from_toml(sys.argv[1]); print(c.out, c.model)" "$cfg")
[ -f "$out/log.jsonl" ] && cp "$out/log.jsonl" "$dest/log.jsonl"
w="$out/$model.safetensors"  # where the trainer exports
[ -f "$w" ] || { echo "device_train: no export in $out (did it reach export_every?)" >&2; exit 1; }
send() {  # FILE under $out: into $dest as parts under the 16 MiB a returned file may have, with its SHA-256
  split -b 15M -d "$out/$1" "$dest/$1.part" && (cd "$out" && sha256sum "$1") > "$dest/$1.sha256"
}
send "$model.safetensors"
python3 -c "import sys; from safetensors import safe_open; print('export steps', safe_open(sys.argv[1], 'pt').metadata()['steps'])" "$w"
# with keep_exports, also the uniform average of the last four kept exports (a second candidate), when two or more exist
mapfile -t kept < <(find "$out" -maxdepth 1 -name "step-*.safetensors" | sort -V | tail -4)
if [ "${#kept[@]}" -ge 2 ]; then
  a="$out/avg.safetensors"; rm -f "$a"
  if python3 benchmarks/average_exports.py "${kept[@]}" -o "$a" --model "$model"; then
    send avg.safetensors
    echo "averaged: ${kept[*]##*/}"
  fi
fi
rm -f "$dest/install.log"  # it came back only to explain a failed install
