# Sourced by the scripts the device tool runs on its GPU machine: installs the carried wheels
# (.whl: constriction for the machine's Python 3.12, which progcodec imports) and puts them and
# this checkout on the path. SKIP_WHEELS=1 skips the install (a dry run here).
[ -n "${SKIP_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
