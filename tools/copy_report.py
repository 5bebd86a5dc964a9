"""Similarity report of an assignment's submissions, against each other and against bnref.

    .venv/bin/python tools/copy_report.py ASSIGNMENT [--course DIR] [--out DIR] [--display T]

Reads ``<course>/submitted/<student>/<assignment>/*.ipynb`` (what ``nbgrader
collect`` gathers), keeps the code of the solution cells (nbgrader's
``solution: true`` cells, the only code a student writes) and compares every
submission with every other one and with each source file of ``bnref``, using
copydetect: winnowed fingerprints of tokenized code, in which names and
strings are replaced by placeholders, so renaming variables does not hide a
copy. The code of the release's solution cells (``<course>/release/<assignment>``,
else ``assignments/<assignment>`` of this repository) is boilerplate: what
every student was given never counts as shared.

Writes ``<out>/<assignment>-similarity.csv``, one row per pair, most similar
first, and ``<out>/<assignment>-similarity.html``, copydetect's report with
the matching code highlighted side by side. A pair's score is the larger of the
two shares (the part of each side's code found in the other); against a
``bnref`` file it is the share of the submission found in that file. A high
score is a reason to read the two submissions, not a verdict.
"""

import argparse
import csv
import json
import pathlib
import re
import shutil
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent

FIELDS = ["rank", "submission", "other", "other_kind", "score", "share_of_submission",
          "share_of_other", "overlapping_tokens"]


def solution_code(notebook_path):
    """The source of a notebook's nbgrader solution cells, joined, in order."""
    nb = json.loads(pathlib.Path(notebook_path).read_text(encoding="utf-8"))
    parts = []
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") == "code" and meta.get("solution"):
            source = cell.get("source", "")
            parts.append(source if isinstance(source, str) else "".join(source))
    return "\n\n".join(parts) + "\n"


def _safe_name(name):
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if not cleaned or cleaned.startswith("."):
        raise ValueError(f"student id {name!r} cannot be used as a file name")
    return cleaned


def collect_submissions(course, assignment, into):
    """Write each student's solution code to ``into/<student>.py``; return {student: path}."""
    submitted = pathlib.Path(course) / "submitted"
    if not submitted.is_dir():
        raise FileNotFoundError(f"course: no submitted/ folder in {course} (run nbgrader collect first)")
    found = {}
    for student_dir in sorted(p for p in submitted.iterdir() if p.is_dir() and not p.is_symlink()):
        notebooks = sorted(q for q in (student_dir / assignment).glob("*.ipynb") if q.is_file()
                           and not q.is_symlink())
        if not notebooks:
            continue
        code = "\n\n".join(solution_code(nb) for nb in notebooks)
        target = pathlib.Path(into) / f"{_safe_name(student_dir.name)}.py"
        target.write_text(code, encoding="utf-8")
        found[student_dir.name] = target
    return found


def collect_boilerplate(course, assignment, into):
    """The release's solution-cell code (stubs every student got), as boilerplate files."""
    for release in (pathlib.Path(course) / "release" / assignment, REPO / "assignments" / assignment):
        notebooks = sorted(release.glob("*.ipynb"))
        if notebooks:
            for nb in notebooks:
                (pathlib.Path(into) / f"{nb.stem}.py").write_text(solution_code(nb), encoding="utf-8")
            return release
    return None


def collect_reference(into, package=REPO / "bnref"):
    """bnref's source files, flattened to ``bnref.module.py`` names; return {name: path}."""
    found = {}
    for source in sorted(pathlib.Path(package).rglob("*.py")):
        dotted = ".".join(source.relative_to(pathlib.Path(package).parent).with_suffix("").parts)
        target = pathlib.Path(into) / f"{dotted}.py"
        shutil.copyfile(source, target)
        found[dotted] = target
    return found


def rank_pairs(detector, students, references):
    """One row per pair from a run copydetect detector, most similar first."""
    by_path = {str(p): ("submission", name) for name, p in students.items()}
    by_path.update({str(p): ("bnref", name) for name, p in references.items()})
    test_files = [str(f) for f in detector.test_files]
    ref_files = [str(f) for f in detector.ref_files]
    sims, overlap = detector.similarity_matrix, detector.token_overlap_matrix
    rows, seen = [], set()
    for i, test_f in enumerate(test_files):
        _, student = by_path[test_f]
        for j, ref_f in enumerate(ref_files):
            kind, other = by_path[ref_f]
            share_here, share_there = float(sims[i, j, 0]), float(sims[i, j, 1])
            if share_here < 0 or (kind == "submission" and other == student):
                continue  # not compared (the same file)
            key = (kind, frozenset((student, other)))
            if key in seen:
                continue
            seen.add(key)
            score = max(share_here, share_there) if kind == "submission" else share_here
            rows.append({"submission": student, "other": other, "other_kind": kind,
                         "score": round(score, 4), "share_of_submission": round(share_here, 4),
                         "share_of_other": round(share_there, 4),
                         "overlapping_tokens": int(overlap[i, j])})
    rows.sort(key=lambda r: (-r["score"], r["submission"], r["other"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def report(assignment, course=REPO, out=None, display=0.3):
    """Run the comparison; write the CSV and HTML; return the ranked rows."""
    from copydetect import CopyDetector  # imported here: only this command needs it

    if not 0 <= display <= 1:
        raise ValueError(f"display must be a share between 0 and 1, got {display!r}")
    out = pathlib.Path(out) if out else pathlib.Path(course) / "reports" / "similarity"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="copy-report-") as tmp:
        subs, refs, plate = (pathlib.Path(tmp) / d for d in ("submissions", "bnref", "boilerplate"))
        for d in (subs, refs, plate):
            d.mkdir()
        students = collect_submissions(course, assignment, subs)
        if len(students) < 2:
            raise ValueError(f"assignment {assignment!r}: {len(students)} submission(s) in "
                             f"{course}/submitted, expected at least 2 to compare")
        references = collect_reference(refs)
        collect_boilerplate(course, assignment, plate)
        html = out / f"{assignment}-similarity.html"
        detector = CopyDetector(test_dirs=[str(subs)], ref_dirs=[str(subs), str(refs)],
                                boilerplate_dirs=[str(plate)], extensions=["py"],
                                display_t=display, autoopen=False, silent=True,
                                out_file=str(html))
        detector.run()
        rows = rank_pairs(detector, students, references)
        detector.generate_html_report()
    with open(out / f"{assignment}-similarity.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignment")
    parser.add_argument("--course", default=str(REPO), help="nbgrader course directory (default: this repository)")
    parser.add_argument("--out", default=None, help="output folder (default: <course>/reports/similarity)")
    parser.add_argument("--display", type=float, default=0.3,
                        help="share above which the HTML report shows a pair's code (default 0.3)")
    args = parser.parse_args(argv)
    rows = report(args.assignment, args.course, args.out, args.display)
    for row in rows[:10]:
        print(f"{row['rank']:3d}  {row['score']:.2f}  {row['submission']} ~ {row['other']} ({row['other_kind']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
