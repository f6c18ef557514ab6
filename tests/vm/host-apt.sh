# Sourced by image.sh and run.sh. mmdebstrap reads none of the host's apt
# configuration; where the host's own apt turns off the Release file's date
# checks (a mirror proxy or a snapshot whose Valid-Until has passed), the
# builds here do the same, so they fail no more often than the host's own
# `apt-get update`. Same rule as hutchctl's template build
# (runtime/src/template/build.rs, host_apt_checks). Sets HOST_APT_OPTS.
HOST_APT_OPTS=()
while read -r line; do
    case $line in
        'Acquire::Check-Valid-Until "false";') HOST_APT_OPTS+=(--aptopt='Acquire::Check-Valid-Until "false"') ;;
        'Acquire::Check-Date "false";') HOST_APT_OPTS+=(--aptopt='Acquire::Check-Date "false"') ;;
    esac
done < <(apt-config dump Acquire::Check-Valid-Until Acquire::Check-Date 2>/dev/null || true)
