#!/usr/bin/env bash
# package_test (ctest label package): builds the Debian packages of BUILD_DIR with cpack, checks
# their contents, dependencies and maintainer scripts, installs them on this machine with apt (so
# their dependencies resolve), checks the installed systemd units with systemd-analyze verify,
# runs the installed programs (fleetflow --version, fleetflow validate on the installed
# pipelines, fleetflow test on their tests, fleet-sensor --help, ...), finds the man pages, then
# purges the packages and checks that their files are gone.
#
# Needs root (or password-less sudo) for apt: otherwise it exits 77, which ctest reports as
# skipped and scripts/test.sh's summary turns into a WARNING line. It refuses (fails) when a
# fleetflow package is installed already, and leaves the machine as it found it, also when a
# check fails: an EXIT trap purges what it installed, with the dependencies apt pulled in for
# them. One run at a time per machine (a lock), since the packages are machine-wide.
#
# With CONSUMER_DIR (tests/install/consumer) it also builds that project against the installed
# fleetflow-dev (find_package(fleetflow) from /usr) and runs its test.
#
# Usage: package_test.sh BUILD_DIR [CPACK [CONSUMER_DIR]]
set -euo pipefail

build_dir=${1:?usage: package_test.sh BUILD_DIR [CPACK [CONSUMER_DIR]]}
cpack=${2:-cpack}
consumer_dir=${3:-}
cmake=$(dirname "$(command -v "$cpack")")/cmake
[[ -x $cmake ]] || cmake=cmake
packages=(fleetflow fleet-sensor fleetflow-dev)

failures=0
fail() {
  echo "package_test: FAILED: $*" >&2
  failures=$((failures + 1))
}
die() {
  echo "package_test: FAILED: $*" >&2
  exit 1
}
say() { echo "package_test: $*"; }

sudo=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "package_test: SKIPPED: installing the packages needs root or password-less sudo;" \
      "run ctest as root (CI does) or with sudo rights to test the packages" >&2
    exit 77
  fi
fi
for tool in dpkg-deb dpkg-shlibdeps apt-get systemd-analyze; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool not found: run scripts/deps.sh (Debian packages dpkg-dev, apt, systemd)"
done

# One run per machine: another checkout's package_test would install the same packages.
lock=/run/lock/fleetflow-package-test.lock
[[ -d /run/lock && -w /run/lock ]] || lock=${TMPDIR:-/tmp}/fleetflow-package-test.lock
exec 9>>"$lock"
if ! flock -w 1200 9; then
  die "another package_test still holds $lock after 20 minutes"
fi

installed() {  # installed <package>: true when dpkg has it installed (or half-installed)
  local status
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true)
  [[ -n "$status" && "$status" != un* && "$status" != pn* ]]
}
for p in "${packages[@]}"; do
  if installed "$p"; then
    die "package $p is installed on this machine already; this test installs and purges its own" \
      "build of it and will not replace yours (apt-get purge ${packages[*]} first)"
  fi
done
for f in /usr/bin/fleetflow /usr/bin/fleet-sensor /usr/bin/fleetctl /usr/bin/fleet-sim; do
  if [[ -e $f ]]; then
    die "$f exists (installed by hand?); this test would overwrite and then remove it"
  fi
done

work=$(mktemp -d)
chmod 755 "$work"  # apt's download sandbox user reads the .deb files
before_pkgs=$work/before.txt
dpkg-query -W -f='${Package}\n' | sort >"$before_pkgs"
apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
  -o Dpkg::Options::=--force-confold)
apt() {
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" -q -y "$@" </dev/null
}
cleanup() {
  local status=$? p left=()
  # set -e ended the script on a command that failed: say so (the checks say what they found).
  ((status == 0 || status == 77)) || echo "package_test: FAILED (exit $status)" >&2
  for p in "${packages[@]}"; do
    installed "$p" && left+=("$p")
  done
  # Dependencies apt installed for the packages go too.
  if [[ -f $before_pkgs ]]; then
    while read -r p; do
      left+=("$p")
    done < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 ~ /^i/ {print $2}' |
      sort | comm -13 "$before_pkgs" - | grep -vxF -f <(printf '%s\n' "${packages[@]}") || true)
  fi
  if ((${#left[@]})); then
    echo "package_test: cleaning up: apt-get purge ${left[*]}" >&2
    apt purge "${left[@]}" >&2 || echo "package_test: purge failed: remove ${left[*]} by hand" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the packages --------------------------------------------------------------------------
say "cpack in $build_dir (into $work/out)"
"$cpack" --config "$build_dir/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log"; die "cpack failed (above)"; }
declare -A deb
for p in "${packages[@]}"; do
  mapfile -t found < <(find "$work/out" -maxdepth 1 -name "${p}_*.deb")
  ((${#found[@]} == 1)) || { cat "$work/cpack.log"; die "cpack made ${#found[@]} ${p}_*.deb"; }
  deb[$p]=${found[0]}
  say "$(basename "${deb[$p]}"): $(du -h "${deb[$p]}" | cut -f1);" \
    "Depends: $(dpkg-deb -f "${deb[$p]}" Depends)"
done

contents() { dpkg-deb -c "$1" | awk '{print $6}' | sed 's|^\./|/|'; }
expect_files() {  # expect_files <package> <path...>
  local p=$1 list
  shift
  list=$(contents "${deb[$p]}")
  for f in "$@"; do
    grep -qxF "$f" <<<"$list" || fail "$p does not contain $f"
  done
}
expect_files fleetflow /usr/bin/fleetflow \
  /usr/share/fleetflow/schemas/pipeline.schema.json \
  /usr/share/fleetflow/schemas/alarm.schema.json \
  /usr/share/fleetflow/pipelines/default.json /usr/share/fleetflow/pipelines/default.test.json \
  /usr/share/man/man1/fleetflow.1 /usr/share/man/man1/fleetflow-run.1 \
  /usr/share/man/man1/fleetflow-validate.1 \
  /usr/lib/systemd/system/fleetflow@.service /usr/share/doc/fleetflow/install.md \
  /usr/share/doc/fleetflow/fleetflow.env.example
expect_files fleet-sensor /usr/bin/fleet-sensor /usr/bin/fleetctl /usr/bin/fleet-sim \
  /usr/share/man/man1/fleet-sensor.1 /usr/share/man/man1/fleetctl.1 \
  /usr/share/man/man1/fleet-sim.1 /usr/lib/systemd/system/fleet-sensor.service
grep -q '/fleetflowConfig\.cmake$' <<<"$(contents "${deb[fleetflow-dev]}")" ||
  fail "fleetflow-dev has no fleetflowConfig.cmake"
grep -q '/libff_engine\.a$' <<<"$(contents "${deb[fleetflow-dev]}")" ||
  fail "fleetflow-dev has no libff_engine.a"
for p in "${packages[@]}"; do
  # Nothing in /etc: an administrator's configuration is never overwritten.
  if etc=$(contents "${deb[$p]}" | grep '^/etc/'); then
    fail "$p ships files in /etc: $etc"
  fi
done
if other=$(contents "${deb[fleet-sensor]}" | grep -E '/bin/fleetflow$|fleetflow@|/share/fleetflow/'); then
  fail "fleet-sensor carries the engine's files: $other"
fi

# Dependencies: the engine's libraries in fleetflow's (dpkg-shlibdeps ran), none in fleet-sensor's.
engine_libs='libtbb|libpqxx|libpq5|libspdlog|libprometheus|libgeos|libmuparser|libabsl|libfmt'
fw_depends=$(dpkg-deb -f "${deb[fleet-sensor]}" Depends)
if grep -qE "$engine_libs" <<<"$fw_depends"; then
  fail "fleet-sensor depends on an engine library: $fw_depends"
fi
grep -q libnats <<<"$fw_depends" || fail "fleet-sensor does not depend on libnats: '$fw_depends'"
ff_depends=$(dpkg-deb -f "${deb[fleetflow]}" Depends)
for lib in libtbb libpqxx libnats; do
  grep -q "$lib" <<<"$ff_depends" || fail "fleetflow does not depend on $lib: '$ff_depends'"
done
version=$(dpkg-deb -f "${deb[fleetflow]}" Version)

# Maintainer scripts: a daemon-reload while systemd runs, never an enable or a start.
for p in fleetflow fleet-sensor; do
  dpkg-deb -e "${deb[$p]}" "$work/control-$p"
  for s in postinst postrm; do
    f=$work/control-$p/$s
    [[ -x $f ]] || { fail "$p has no executable $s"; continue; }
    grep -q 'daemon-reload' "$f" || fail "$p's $s does not run systemctl daemon-reload"
    grep -q '/run/systemd/system' "$f" || fail "$p's $s does not check that systemd runs"
    if grep -vE '^\s*#' "$f" | grep -qE 'systemctl[^#]*(enable|start|restart)'; then
      fail "$p's $s enables or starts a unit"
    fi
  done
done
((failures == 0)) || die "$failures problem(s) in the packages (above)"

# --- installed -----------------------------------------------------------------------------
say "apt-get install ${deb[*]}"
apt install --no-install-recommends "${deb[@]}" >"$work/apt.log" 2>&1 ||
  { cat "$work/apt.log"; die "apt-get install failed (above)"; }
for p in "${packages[@]}"; do
  installed "$p" || die "$p is not installed after apt-get install"
done
declare -A files
for p in "${packages[@]}"; do
  files[$p]=$(dpkg -L "$p" | while read -r f; do if [[ -f $f ]]; then echo "$f"; fi; done)
done

# The units, as systemd will load them; the template also with an instance. Any message about a
# unit fails (a missing program or man page is one too).
mkdir "$work/units"
unitdir=$(dirname "$(dpkg -L fleetflow | grep '/fleetflow@\.service$' | head -n 1)")
ln -s "$unitdir/fleetflow@.service" "$work/units/fleetflow@ingest.service"
for unit in "$unitdir/fleetflow@.service" "$work/units/fleetflow@ingest.service" \
  "$unitdir/fleet-sensor.service"; do
  if ! out=$(systemd-analyze verify "$unit" 2>&1) || [[ -n "$out" ]]; then
    fail "systemd-analyze verify $unit:"$'\n'"$out"
  else
    say "systemd-analyze verify $(basename "$unit"): no findings"
  fi
done

ran() {  # ran <what> <command...>: runs it, fails the test with its output when it fails
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    say "$what: ok"
  else
    fail "$what (exit $?): $*"$'\n'"$out"
  fi
}
installed_version=$(/usr/bin/fleetflow --version 2>&1) || fail "fleetflow --version failed"
[[ "$version" == "$installed_version"* ]] ||
  fail "/usr/bin/fleetflow --version says '$installed_version', the package is $version"
pipelines=()
for f in /usr/share/fleetflow/pipelines/*.json; do
  [[ $f == *.test.json ]] || pipelines+=("$f")
done
((${#pipelines[@]} > 0)) || fail "no pipelines in /usr/share/fleetflow/pipelines"
ran "fleetflow validate ${pipelines[*]}" /usr/bin/fleetflow validate "${pipelines[@]}"
# The shipped pipeline tests pass with the installed program (no servers needed).
# shellcheck disable=SC2016 # $1 is the inner shell's
ran "fleetflow test on the installed *.test.json" \
  bash -c 'cd "$1" && /usr/bin/fleetflow test /usr/share/fleetflow/pipelines/*.test.json' \
  _ "$work"
for prog in fleet-sensor fleetctl fleet-sim; do
  ran "$prog --help" "/usr/bin/$prog" --help
done
for page in fleetflow fleetflow-run fleetflow-validate fleet-sensor fleetctl fleet-sim; do
  if command -v man >/dev/null 2>&1; then
    ran "man -w $page" man -w "$page"
  elif [[ ! -f /usr/share/man/man1/$page.1 ]]; then
    fail "man page $page.1 not installed"
  fi
done
if [[ -n $consumer_dir ]]; then
  # The SDK from the package alone: no prefix path, so find_package(fleetflow) looks in /usr.
  if "$cmake" -S "$consumer_dir" -B "$work/consumer" >"$work/consumer.log" 2>&1 &&
    "$cmake" --build "$work/consumer" >>"$work/consumer.log" 2>&1 &&
    "$work/consumer/scale_test" >>"$work/consumer.log" 2>&1; then
    sdk_dir=$(grep "^fleetflow_DIR:" "$work/consumer/CMakeCache.txt" || true)
    if [[ $sdk_dir == *=/usr/* ]]; then
      say "tests/install/consumer built against the installed fleetflow-dev: ok ($sdk_dir)"
    else
      fail "tests/install/consumer did not find the installed fleetflow-dev: $sdk_dir"
    fi
  else
    cat "$work/consumer.log" >&2
    fail "tests/install/consumer against the installed fleetflow-dev (above)"
  fi
fi

# --- removed -------------------------------------------------------------------------------
say "apt-get purge ${packages[*]}"
apt purge "${packages[@]}" >"$work/apt-purge.log" 2>&1 ||
  { cat "$work/apt-purge.log"; die "apt-get purge failed (above)"; }
for p in "${packages[@]}"; do
  if installed "$p"; then
    fail "$p is still installed after apt-get purge"
  fi
  still=$(while read -r f; do if [[ -n $f && -e $f ]]; then echo "$f"; fi; done <<<"${files[$p]}")
  [[ -z "$still" ]] || fail "files of $p left after purge:"$'\n'"$still"
done
((failures == 0)) || die "$failures check(s) failed (above)"
say "passed: built, installed, verified, ran and purged ${packages[*]} ($version)"
