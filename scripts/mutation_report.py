#!/usr/bin/env python3
"""Refresh the counts and the survivors table of docs/mutation.md from a
cargo-mutants output directory.

    python3 scripts/mutation_report.py /work/mutants-out/mutants.out

Counts come from outcomes.json; survivors from missed.txt; each survivor's
verdict from docs/mutation-verdicts.tsv (mutant name, TAB, verdict). A
survivor with no verdict there is listed under "Not yet handled".
"""

import datetime
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "mutation.md"
VERDICTS = ROOT / "docs" / "mutation-verdicts.tsv"


def counts(out: pathlib.Path) -> str:
    o = json.loads((out / "outcomes.json").read_text())
    start = datetime.datetime.fromisoformat(o["start_time"][:19])
    end = o["end_time"]
    stop = datetime.datetime.fromisoformat(end[:19]) if end else datetime.datetime.utcnow()
    minutes = int((stop - start).total_seconds() // 60)
    when = f"{stop:%Y-%m-%d %H:%M} UTC" + ("" if end else ", while the run was still going")
    rows = [
        ("caught", o["caught"]),
        ("missed (survived)", o["missed"]),
        ("timeout", o["timeout"]),
        ("unviable (did not build)", o["unviable"]),
    ]
    lines = [f"Read from `mutants.out/outcomes.json` at {when}:", ""]
    lines += ["| outcome | mutants |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines.append(f"| **tested, of 984** | **{o['total_mutants']}** |")
    lines.append("")
    state = "finished" if end else "not finished"
    lines.append(f"Time taken: {minutes} min from {start:%H:%M} UTC ({state}).")
    return "\n".join(lines)


def table(out: pathlib.Path) -> str:
    missed = [l.strip() for l in (out / "missed.txt").read_text().splitlines() if l.strip()]
    verdicts = {}
    for line in VERDICTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, why = line.split("\t", 1)
            verdicts[name] = why

    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    done = [n for n in missed if n in verdicts]
    todo = [n for n in missed if n not in verdicts]
    lines = [f"{len(done)} of {len(missed)} survivors handled.", ""]
    lines += ["| mutant | verdict |", "|---|---|"]
    lines += [f"| `{esc(n)}` | {esc(verdicts[n])} |" for n in done]
    lines += ["", "### Not yet handled", ""]
    lines += [f"- `{n}`" for n in todo] or ["(none)"]
    return "\n".join(lines)


def replace(doc: str, key: str, body: str) -> str:
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main() -> None:
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "mutants.out")
    doc = DOC.read_text()
    doc = replace(doc, "counts", counts(out))
    doc = replace(doc, "survivors", table(out))
    DOC.write_text(doc)


if __name__ == "__main__":
    main()
