#!/usr/bin/env bash
# Generates the man pages in man/ from the programs' --help with help2man: fleetflow.1, one page
# per fleetflow subcommand (fleetflow-run.1, ...: the subcommands are read from `fleetflow
# --help`, so a new one gets its page), fleet-sensor.1, fleetctl.1 and fleet-sim.1.
# The pages are committed (the packages install them without help2man); ctest's man_pages_check
# runs this with --check, which fails when they differ from what the build's --help says.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/man.sh [--check] [--out DIR] [BUILD_DIR]

Regenerates man/*.1 from the --help of BUILD_DIR's programs (default: $FF_BUILD_DIR, else
build): apps/fleetflow, firmware/fleet-sensor, firmware/fleetctl, firmware/fleet-sim. Build them
first: FF_BUILD_TARGET="fleetflow fleet-sensor fleetctl fleet-sim" bash scripts/build.sh

  --check    generate into a temporary directory and compare with man/: exit 1 with the
             differences when the committed pages are out of date
  --out DIR  write the pages into DIR instead of man/

The pages are reproducible: the version is what `fleetflow --version` prints (the project()
version of CMakeLists.txt), the date a fixed one (FF_MAN_DATE, below), so they change only when
a --help text, a subcommand or the version does. Needs help2man (Debian package help2man).
EOF
}

# The date on every page: month and year of the version's release; move it with the version.
FF_MAN_DATE=2026-12-01

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
check=0
out=""
build_dir=${FF_BUILD_DIR:-build}
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --check) check=1 ;;
    --out)
      [[ $# -ge 2 ]] || { echo "man.sh: --out needs a directory" >&2; exit 2; }
      out=$2
      shift
      ;;
    -*) echo "man.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    *) build_dir=$1 ;;
  esac
  shift
done
[[ "$build_dir" = /* ]] || build_dir=$repo_root/$build_dir

if ! command -v help2man >/dev/null 2>&1; then
  echo "man.sh: help2man not found: run scripts/deps.sh (Debian package help2man)" >&2
  exit 1
fi
declare -A program_path=(
  [fleetflow]=$build_dir/apps/fleetflow
  [fleet-sensor]=$build_dir/firmware/fleet-sensor
  [fleetctl]=$build_dir/firmware/fleetctl
  [fleet-sim]=$build_dir/firmware/fleet-sim
)
for p in fleetflow fleet-sensor fleetctl fleet-sim; do
  if [[ ! -x ${program_path[$p]} ]]; then
    echo "man.sh: ${program_path[$p]} not found: build it first:" \
      "FF_BUILD_DIR=$build_dir FF_BUILD_TARGET=\"fleetflow fleet-sensor fleetctl fleet-sim\"" \
      "bash scripts/build.sh" >&2
    exit 1
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The programs run by their bare names from a directory on PATH, so the usage lines say
# "fleetflow run", not the build directory's path; each subcommand gets a wrapper named after its
# page, since help2man names a page after the program it runs.
mkdir "$work/bin" "$work/pages"
for p in "${!program_path[@]}"; do
  ln -s "${program_path[$p]}" "$work/bin/$p"
done
export PATH=$work/bin:$PATH
export LC_ALL=C.UTF-8 TZ=UTC
SOURCE_DATE_EPOCH=$(date -u -d "$FF_MAN_DATE" +%s)
export SOURCE_DATE_EPOCH
# The values of the environment must not leak into the pages (CLI11 shows no defaults from it,
# but a future option might): run with a clean environment but PATH.
run_help2man() {
  env -i PATH="$PATH" LC_ALL=C.UTF-8 TZ=UTC SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" \
    help2man --no-info --no-discard-stderr --version-string="$version" "$@"
}

version=$(fleetflow --version)
# The first sentence of a --help's description: the page's one-line NAME.
describe() {
  local help
  help=$("$@" --help)
  sed -n '1{s/\. .*//;s/\.$//;p;q}' <<<"$help"
}

# fleetflow's subcommands: the lines of the "Subcommands:" block of its --help.
mapfile -t subcommands < <(fleetflow --help |
  sed -n '/^Subcommands:/,/^$/{/^  [a-z]/{s/^  \([a-z][a-z0-9-]*\).*/\1/;p}}')
if ((${#subcommands[@]} == 0)); then
  echo "man.sh: no subcommands found in 'fleetflow --help'" >&2
  exit 1
fi

see_also() {  # see_also <page...>: an include file for help2man with a SEE ALSO section
  local f=$work/see-also.h2m
  {
    echo "[SEE ALSO]"
    local first=1 page
    for page in "$@"; do
      ((first)) || printf ',\n'
      printf '.BR %s (1)' "$page"
      first=0
    done
    printf '\n'
  } >"$f"
  echo "$f"
}

sub_pages=()
for s in "${subcommands[@]}"; do
  sub_pages+=("fleetflow-$s")
done
run_help2man --name="$(describe fleetflow)" --include="$(see_also "${sub_pages[@]}")" \
  --output="$work/pages/fleetflow.1" fleetflow
for s in "${subcommands[@]}"; do
  printf '#!/bin/sh\nexec fleetflow %s "$@"\n' "$s" >"$work/bin/fleetflow-$s"
  chmod +x "$work/bin/fleetflow-$s"
  run_help2man --name="$(describe fleetflow "$s")" --include="$(see_also fleetflow)" \
    --output="$work/pages/fleetflow-$s.1" "fleetflow-$s"
done
run_help2man --name="$(describe fleet-sensor)" --include="$(see_also fleetctl fleet-sim fleetflow)" \
  --output="$work/pages/fleet-sensor.1" fleet-sensor
run_help2man --name="$(describe fleetctl)" --include="$(see_also fleet-sensor)" \
  --output="$work/pages/fleetctl.1" fleetctl
run_help2man --name="$(describe fleet-sim)" --include="$(see_also fleet-sensor fleetflow)" \
  --output="$work/pages/fleet-sim.1" fleet-sim

man_dir=$repo_root/man
if ((check)); then
  if diff -ru "$man_dir" "$work/pages" >"$work/diff"; then
    echo "man.sh: the $(find "$work/pages" -name '*.1' | wc -l) man pages in man/ match the" \
      "programs' --help"
    exit 0
  fi
  cat "$work/diff"
  echo "man.sh: FAILED: man/ differs from what the programs' --help gives (above: - committed," \
    "+ generated). Regenerate and commit them:" >&2
  echo "  bash scripts/man.sh $build_dir && git add man/" >&2
  exit 1
fi
dest=${out:-$man_dir}
mkdir -p "$dest"
# Pages of subcommands that no longer exist go; the others are replaced.
rm -f "$dest"/fleetflow*.1 "$dest"/fleet-sensor.1 "$dest"/fleetctl.1 "$dest"/fleet-sim.1
cp "$work/pages/"*.1 "$dest/"
echo "man.sh: wrote $(find "$work/pages" -name '*.1' | wc -l) pages into $dest"
