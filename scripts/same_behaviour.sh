#!/bin/bash
# Two builds of `vdm` on the same inputs: the check that a refactoring changed no number.
#
#     scripts/same_behaviour.sh OLD_VDM NEW_VDM [WORK_DIR]
#
# Trains a small VDM and a small DDPM (300 steps each on the bundled digits) with OLD, then runs
# with each binary: `vdm eval` (VDM at T=∞ and T=100 with 3 draws; DDPM sampled and full bound),
# `vdm sample` (ancestral and DDIM, both families), and 60 steps of training of each family,
# whose checkpoints are then evaluated with NEW. It prints what differs: every printed bound,
# the sample PNGs byte for byte, the training losses and the trained models' bounds. (Weight
# files themselves differ between any two runs: burn records a random id per parameter.)
set -u
OLD=$(realpath "$1"); NEW=$(realpath "$2"); W=${3:-$(mktemp -d)}
mkdir -p "$W" && cd "$W" || exit 2
"$OLD" config > vdm.toml && "$OLD" config --family ddpm > ddpm.toml
sed -i 's/^steps = 1500/steps = 300/; s/^every = 500/every = 0/' vdm.toml ddpm.toml
sed -i '0,/^time_steps = 1000/s//time_steps = 100/' ddpm.toml
[ -d runs/vdm ] || "$OLD" train --config vdm.toml --run runs/vdm > /dev/null
[ -d runs/ddpm ] || "$OLD" train --config ddpm.toml --run runs/ddpm > /dev/null

outputs() { # BINARY DIR
    local B=$1 O=$2
    rm -rf "$O" && mkdir -p "$O"
    "$B" eval --checkpoint runs/vdm --time-steps 0 --time-steps 100 --draws 3 --limit 100 | grep "test bpd" > "$O/eval_vdm.txt"
    "$B" eval --checkpoint runs/ddpm --draws 2 --full-bound --limit 40 | grep "test bpd" > "$O/eval_ddpm.txt"
    "$B" sample --checkpoint runs/vdm --n 16 --steps 50 --seed 3 --out "$O/vdm_ancestral.png" > /dev/null
    "$B" sample --checkpoint runs/vdm --n 16 --steps 20 --sampler ddim --eta 0.5 --seed 3 --out "$O/vdm_ddim.png" > /dev/null
    "$B" sample --checkpoint runs/ddpm --n 16 --steps 100 --seed 4 --out "$O/ddpm_ancestral.png" > /dev/null
    "$B" sample --checkpoint runs/ddpm --n 16 --steps 10 --sampler ddim --seed 4 --out "$O/ddpm_ddim.png" > /dev/null
    for family in vdm ddpm; do
        "$B" train --config $family.toml --run "$O/run_$family" --steps 60 | grep -o "loss [0-9.]* [a-z]*" > "$O/train_$family.txt"
        "$NEW" eval --checkpoint "$O/run_$family" --limit 100 | grep "test bpd" > "$O/trained_$family.txt"
    done
}
outputs "$OLD" old && outputs "$NEW" new
status=0
for f in $(ls old); do
    [ -d old/$f ] && continue
    if cmp -s old/$f new/$f; then echo "same:    $f"; else echo "DIFFERS: $f"; diff old/$f new/$f; status=1; fi
done
exit $status
