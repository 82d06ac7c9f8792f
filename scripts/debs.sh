# Sourced by the set-up scripts: install_missing_debs TAG PKG... installs, with apt, those of the
# Debian packages PKG that are not installed yet (a no-op when all are), logging under [TAG].
install_missing_debs() {
  local tag=$1 p sudo=""
  shift
  [ "$(id -u)" = 0 ] || sudo=sudo
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    printf '[%s] installing Debian packages: %s\n' "$tag" "${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}
