#!/usr/bin/env bash
# Layout rules of issue 9: no file under src/ over 500 lines; no function outside `#[cfg(test)]`
# over 100 lines (functions over 80 are listed as a notice). Run from scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
while read -r lines file; do
    if [ "$file" != total ] && [ "$lines" -gt 500 ]; then
        echo "check-layout: $file has $lines lines (max 500)" >&2
        status=1
    fi
done < <(find src -name '*.rs' -print0 | xargs -0 wc -l)
# Functions: rustfmt puts a function's closing brace at the indentation of its `fn` line.
python3 - <<'PY' || status=1
import pathlib, re, sys
fn = re.compile(r'^(\s*)(pub(\([a-z]+\))? )?(const )?(async )?(unsafe )?fn \w+')
bad = False
for path in sorted(pathlib.Path('src').rglob('*.rs')):
    lines = path.read_text().split('\n')
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == '#[cfg(test)]' and i + 1 < len(lines) and re.match(r'\s*(pub(\(crate\))? )?mod \w+ \{', lines[i + 1]):
            indent = lines[i + 1][: len(lines[i + 1]) - len(lines[i + 1].lstrip())]
            i += 2
            while i < len(lines) and lines[i] != indent + '}':
                i += 1
            continue
        m = fn.match(line)
        if m and not line.rstrip().endswith(';'):
            indent = m.group(1)
            j = i
            while j < len(lines) and lines[j] != indent + '}' and not (j == i and line.rstrip().endswith('}')):
                j += 1
            n = j - i + 1
            if n > 100:
                print(f'check-layout: {path}:{i + 1} function has {n} lines (max 100)', file=sys.stderr)
                bad = True
            elif n > 80:
                print(f'check-layout: notice: {path}:{i + 1} function has {n} lines (aim: 80)', file=sys.stderr)
        i += 1
sys.exit(1 if bad else 0)
PY
exit $status
