#!/usr/bin/env bash
# Loads a musl build of the addon with musl's own dynamic loader, RTLD_NOW, and finds its
# Node-API entry point: every libc symbol it needs must exist in musl, and its NEEDED libraries
# must resolve as they do on Alpine. The host program is built with musl-gcc and exports a
# stand-in for each Node-API and libuv function the addon imports (none is called: a Node on
# musl is what would provide them, and none could be installed from the package registries).
#   bash scripts/emulated/musl-dlopen.sh npm/linux-x64-musl/imt-gateway.linux-x64-musl.node
set -euo pipefail
addon="$(realpath "${1:?usage: musl-dlopen.sh ADDON}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
{
  echo '#include <dlfcn.h>'
  echo '#include <stdio.h>'
  echo '#include <stdlib.h>'
  readelf --dyn-syms -W "$addon" | awk '$7 == "UND" && $8 ~ /^(napi_|node_api_|uv_)/ { sub(/@.*/, "", $8); print $8 }' | sort -u |
    while read -r sym; do echo "void $sym(void) { abort(); }"; done
  cat <<'C'
int main(int argc, char **argv) {
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) { fprintf(stderr, "dlopen failed: %s\n", dlerror()); return 1; }
  if (!dlsym(lib, "napi_register_module_v1")) { fprintf(stderr, "no napi_register_module_v1\n"); return 1; }
  printf("musl loaded %s and found napi_register_module_v1\n", argv[1]);
  return 0;
}
C
} > "$work/host.c"
musl-gcc -O1 -rdynamic -o "$work/host" "$work/host.c"
readelf -l "$work/host" | grep -q "ld-musl" || { echo "musl-dlopen: the host is not a dynamic musl program" >&2; exit 1; }
"$work/host" "$addon"
