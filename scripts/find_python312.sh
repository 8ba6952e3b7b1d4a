#!/usr/bin/env bash
# Print the path of a working Python 3.12 interpreter (PATH, then pyenv), or nothing.
ok() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; }
candidates=(python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12)
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root 2>/dev/null)
  for d in "$root"/versions/3.12*; do [ -x "$d/bin/python" ] && candidates+=("$d/bin/python"); done
fi
for p in "${candidates[@]}"; do
  if ok "$p"; then "$p" -c 'import sys; print(sys.executable)'; exit 0; fi
done
exit 1
