"""The instructor's side: assignment files, `assignment show|check`, `handin`, `grade`.

A class of seven simulated students on the churn assignment (400 made-up customers) is trained,
handed in and graded once per module: an honest student above the target, one below it, one
who edited summary.json to claim 0.99, one who changed a locked key in config.yaml, one who
handed in another student's weights, a corrupt zip and a zip with a `../` entry. The pages it
writes are opened in headless Chromium.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import dlcourse
from dlcourse.cli import app
from dlcourse.grading.gradebook import COLUMNS
from dlcourse.tasks import format_metric
from tests.conftest import CHURN_HEADER, REPO, churn_rows, write_csv, write_tiny_mnist

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
CHURN = REPO / "configs" / "assignments" / "churn.assignment.yaml"
MNIST = REPO / "configs" / "assignments" / "mnist.assignment.yaml"
ASSIGNMENTS = sorted((REPO / "configs" / "assignments").glob("*.assignment.yaml"))
QUIET = ["--set", "logging.progress=false", "--set", "logging.tensorboard=false"]


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


def train(assignment: Path, runs: Path, data_dir: Path, *sets: str) -> Path:
    """`dlcourse train ASSIGNMENT --set ...` into runs/; the run folder."""
    overrides = [arg for value in sets for arg in ("--set", value)]
    result = invoke("train", assignment, "--runs-dir", runs, "--data-dir", data_dir, *QUIET,
                    *overrides)  # fmt: skip
    assert result.exit_code == 0, result.output
    (folder,) = runs.iterdir()
    return folder


def handin(run: Path, student: str, out: Path, data_dir: Path) -> Path:
    result = invoke("handin", run, "--student", student, "--out", out, "--data-dir", data_dir)
    assert result.exit_code == 0, result.output
    return out


def rewrite(zip_path: Path, changes: dict[str, bytes], fix_manifest: bool = True) -> None:
    """Edit entries of a hand-in as a student with a zip tool would; with fix_manifest, the
    manifest's SHA-256s are brought up to date as well (a careful cheat)."""
    from dlcourse.grading.bundle import sha256
    from dlcourse.grading.handin import zip_bytes

    with zipfile.ZipFile(zip_path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries.update(changes)
    if fix_manifest:
        manifest = json.loads(entries["manifest.json"])
        for name in changes:
            manifest["files"][name] = {"sha256": sha256(entries[name]),
                                       "bytes": len(entries[name])}  # fmt: skip
        entries["manifest.json"] = json.dumps(manifest).encode()
    zip_path.write_bytes(zip_bytes(entries))


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under root (but not under skip): its size and modification time."""
    found = {}
    for path in root.rglob("*"):
        if skip in path.parents or path == skip or not path.is_file():
            continue
        info = path.stat()
        found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


def read_gradebook(folder: Path) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO((folder / "gradebook.csv").read_text())))
    return {row["student"]: row for row in rows}


class Class:
    """The seven students, handed in and graded once (module scope)."""

    def __init__(self, root: Path):
        self.root, self.data = root, root / "data"
        write_csv(self.data / "churn" / "Churn_Modelling.csv", CHURN_HEADER, churn_rows(400))
        self.handins = root / "handins"
        self.handins.mkdir()
        self.runs: dict[str, Path] = {}
        honest = {
            "alice": ["model.hidden=[16]", "optim.lr=0.01", "train.epochs=30"],
            "bob": ["model.hidden=[4]", "optim.lr=0.0001", "train.epochs=2"],
            "carol": ["model.hidden=[8]", "optim.lr=0.01", "train.epochs=20"],
            "dave": ["model.hidden=[12]", "optim.lr=0.01", "train.epochs=10"],
            "eve": ["model.hidden=[6]", "optim.lr=0.01", "train.epochs=10"],
        }
        for student, sets in honest.items():
            self.runs[student] = train(CHURN, root / "runs" / student, self.data, *sets)
            with pytest.MonkeyPatch.context() as patch:
                if student != "alice":  # their own report (3 s each) is never read by the grader
                    patch.setattr("dlcourse.grading.handin.report_html", lambda *args: b"<p>")
                handin(self.runs[student], student, self.handins / f"{student}.zip", self.data)
        summary = json.loads((self.runs["carol"] / "summary.json").read_text())
        summary["test"]["accuracy"] = 0.99
        rewrite(self.zip("carol"), {"summary.json": json.dumps(summary).encode()})
        config = yaml.safe_load((self.runs["dave"] / "config.yaml").read_text())
        config["seed"] = 7
        rewrite(self.zip("dave"), {"config.yaml": yaml.safe_dump(config).encode()})
        with zipfile.ZipFile(self.zip("carol")) as archive:
            weights = archive.read("model.safetensors")
        rewrite(self.zip("eve"), {"model.safetensors": weights})
        self.zip("frank").write_bytes(self.zip("alice").read_bytes()[:5000])  # cut off: corrupt
        shutil.copy(self.zip("bob"), self.zip("grace"))
        with zipfile.ZipFile(self.zip("grace"), "a") as archive:
            archive.writestr("../../escaped.txt", "written outside the grading folder")
        self.before = snapshot(root, root / "graded")
        os.chdir(root)
        self.result = invoke("grade", CHURN, self.handins, "--out", root / "graded",
                             "--data-dir", self.data, "--jobs", "2")  # fmt: skip
        self.after = snapshot(root, root / "graded")
        self.graded = root / "graded"

    def zip(self, student: str) -> Path:
        return self.handins / f"{student}.zip"


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory: pytest.TempPathFactory) -> Class:
    cwd = os.getcwd()
    try:
        return Class(tmp_path_factory.mktemp("class"))
    finally:
        os.chdir(cwd)


# ------------------------------------------------------------------ the class


def test_the_class_is_graded_to_the_expected_rows(graded_class: Class) -> None:
    assert graded_class.result.exit_code == 0, graded_class.result.output
    rows = read_gradebook(graded_class.graded)
    assert list(rows) == ["alice", "bob", "carol", "dave", "eve", "frank", "grace"]
    status = {student: row["status"] for student, row in rows.items()}
    assert status == {"alice": "graded", "bob": "graded", "carol": "flagged", "dave": "flagged",
                      "eve": "flagged", "frank": "rejected", "grace": "rejected"}  # fmt: skip
    alice, bob = rows["alice"], rows["bob"]
    assert float(alice["measured"]) >= 0.855 and alice["grade"] == "10" and alice["flags"] == ""
    assert alice["measured"] == alice["claimed"] == alice["reproduced"]  # one truth
    assert float(bob["measured"]) < 0.80 and bob["grade"] == "0" and bob["flags"] == ""
    carol = rows["carol"]
    assert carol["claimed"] == "0.99" and float(carol["measured"]) < 0.99
    assert "claimed test accuracy 99.00%, but the kept weights measure" in carol["flags"]
    assert carol["grade"] != ""  # graded on the measured number, flagged for a look
    assert (
        "a locked key changed: seed: locked by the assignment (seed); 0 -> 7"
        in (rows["dave"]["flags"])
    )
    assert "model.safetensors was not trained with this config.yaml: seed" in rows["dave"]["flags"]
    eve = rows["eve"]["flags"]
    assert "identical weights to carol's" in eve and "identical weights to eve's" in carol["flags"]
    assert "model.safetensors was not trained with this config.yaml: model.hidden" in eve
    assert rows["frank"]["flags"].startswith("corrupt") and rows["frank"]["grade"] == ""
    assert rows["grace"]["flags"].startswith('unsafe entry "../../escaped.txt"')
    for student in ("frank", "grace"):
        assert rows[student]["measured"] == "" and rows[student]["claimed"] == ""
    # the output ends with every row to look at, the class-wide flags included
    output = graded_class.result.output
    assert f"flagged: eve (eve.zip): {rows['eve']['flags']}" in output
    assert "identical weights to carol's" in output.split("7 hand-ins in")[1]
    assert f"rejected: frank (frank.zip): {rows['frank']['flags']}" in output
    # carol's report, written again from her files, opens with what the grader measured
    report = (graded_class.graded / "reports" / "carol.html").read_text()
    measured = format_metric("accuracy", float(carol["measured"]))
    assert (f"Graded by dlcourse: the kept weights measure test accuracy {measured} on the "
            "assignment&#x27;s test split (claimed: 99.00%)") in report  # fmt: skip
    assert "Flags, to look at before the grade counts: claimed test accuracy 99.00%" in report
    assert report.index("Graded by dlcourse") < report.index("test accuracy: 99.00%")


def test_grading_writes_nothing_outside_its_folder(graded_class: Class) -> None:
    assert graded_class.after == graded_class.before
    assert not list(graded_class.root.parent.rglob("escaped.txt"))
    graded = graded_class.graded
    assert sorted(p.name for p in graded.iterdir()) == ["class.html", "gradebook.csv",
                                                        "handins", "reports"]  # fmt: skip
    assert sorted(p.name for p in (graded / "reports").iterdir()) == [
        "alice.html", "bob.html", "carol.html"]  # fmt: skip
    # no pickle from a hand-in, and not the students' own report.html (untrusted HTML)
    extracted = {p.name for p in (graded / "handins").rglob("*") if p.is_file()}
    assert extracted == {"config.yaml", "metrics.jsonl", "summary.json", "model.safetensors",
                         "manifest.json", "split.pt"}  # fmt: skip


def test_the_same_class_graded_twice_from_python_gives_the_same_gradebook(
    graded_class: Class,
) -> None:
    again = graded_class.root / "again"  # (reports, 3 s each, are not in the gradebook)
    book = dlcourse.grade(CHURN, graded_class.handins, out=again, data_dir=graded_class.data,
                          jobs=2, reports=False)  # fmt: skip
    first = (graded_class.graded / "gradebook.csv").read_bytes()
    assert (again / "gradebook.csv").read_bytes() == first
    assert book.gradebook == again / "gradebook.csv" and book.class_page.is_file()
    assert book.counts == {"graded": 2, "flagged": 3, "rejected": 2}
    assert [row.student for row in book.rows] == list(read_gradebook(again))
    measured = read_gradebook(again)["alice"]["measured"]
    assert book.row("alice").measured == pytest.approx(float(measured), abs=1e-6)
    frame = book.to_pandas()  # gradebook.csv's columns and cells, numbers as numbers
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame["student"]) == list(read_gradebook(again))
    assert frame.set_index("student")["grade"].isna().to_dict() == {
        row.student: row.grade is None for row in book.rows}  # fmt: skip
    assert "frank" in book._repr_html_() and "7 hand-ins" in repr(book)


def test_a_handin_holds_the_run_and_a_manifest_but_no_pickle(graded_class: Class) -> None:
    with zipfile.ZipFile(graded_class.zip("alice")) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        files = {name: archive.read(name) for name in names}
    assert names == ["manifest.json", "config.yaml", "metrics.jsonl", "summary.json",
                     "model.safetensors", "report.html", "assignment.yaml"]  # fmt: skip
    assert not [name for name in names if name.endswith((".pt", ".pkl", ".pickle"))]
    from dlcourse.grading.assignment import load_assignment
    from dlcourse.grading.bundle import sha256

    assert manifest["student"] == "alice"
    assert manifest["assignment"]["sha256"] == load_assignment(CHURN).sha256
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(files[name]) and entry["bytes"] == len(files[name])
    for key in ("dlcourse", "torch", "python", "platform", "seed", "device", "threads"):
        assert manifest[key] not in (None, "")


def test_a_handin_into_a_missing_folder_names_the_folder(
    graded_class: Class, tmp_path: Path
) -> None:
    out = tmp_path / "no such folder" / "alice.zip"
    result = invoke("handin", graded_class.runs["alice"], "--student", "alice", "--out", out,
                    "--data-dir", graded_class.data)  # fmt: skip
    assert result.exit_code == 2
    assert f"cannot write it (there is no folder {out.parent})" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_file_changed_after_handin_fails_verification(graded_class: Class) -> None:
    from dlcourse.grading.bundle import check_hashes, read_bundle

    copy = graded_class.root / "edited" / "alice.zip"
    copy.parent.mkdir()
    shutil.copy(graded_class.zip("alice"), copy)
    rewrite(copy, {"summary.json": b"{}"}, fix_manifest=False)
    assert check_hashes(read_bundle(copy)) == [
        "fails verification: summary.json does not match its SHA-256 in manifest.json "
        "(changed after dlcourse handin)"
    ]


def grader(graded_class: Class, out: Path, **settings: object):
    """One hand-in graded in this process (what a worker does)."""
    from dlcourse.app.handin_grading import BundleGrader, Settings

    return BundleGrader(Settings(CHURN, out, graded_class.data, **settings))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "student", ["../../evil", "/tmp/pwned", "<script>alert(1)</script>x", "a\nb", "a..b", ""]
)
def test_a_student_id_that_is_no_file_name_is_rejected(
    graded_class: Class, tmp_path: Path, student: str
) -> None:
    """The id names the student's report file: one that leaves the folder, or is no file
    name, rejects that hand-in alone (it wrote reports/../../evil.html, or stopped the class)."""
    bundle = tmp_path / "handins" / "mallory.zip"
    bundle.parent.mkdir()
    shutil.copy(graded_class.zip("alice"), bundle)
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    rewrite(bundle, {"manifest.json": json.dumps({**manifest, "student": student}).encode()},
            fix_manifest=False)  # fmt: skip
    book = dlcourse.grade(CHURN, [bundle.parent, graded_class.zip("bob")], out=tmp_path / "out",
                          data_dir=graded_class.data, reports=True)  # fmt: skip
    mallory, bob = book.row("mallory"), book.row("bob")
    assert mallory.status == "rejected" and mallory.reasons == [
        "manifest.json: student: use 1 to 64 letters, digits, '.', '_', '-', '+' or '@', "
        "starting with a letter or digit (it names files in the grader's folder)"
    ]
    assert bob.status == "graded" and bob.report == "reports/bob.html"
    assert sorted(path.name for path in (tmp_path / "out" / "reports").iterdir()) == ["bob.html"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["handins", "out"]


def test_the_wrong_assignment_is_rejected(graded_class: Class, tmp_path: Path) -> None:
    from dlcourse.app.handin_grading import BundleGrader, Job, Settings

    worker = BundleGrader(Settings(MNIST, tmp_path, graded_class.data, reports=False))
    row = worker.grade(Job(0, graded_class.zip("alice"), "alice"))
    assert row.reasons and row.reasons[0].startswith(
        "the wrong assignment: handed in for 'Churn: which bank customers leave?'"
    )


def test_retrain_reproduces_an_honest_claim_and_catches_an_edited_one(
    graded_class: Class, tmp_path: Path
) -> None:
    from dlcourse.app.handin_grading import Job

    worker = grader(graded_class, tmp_path, retrain=True, reports=False)
    alice = worker.grade(Job(0, graded_class.zip("alice"), "alice"))
    assert alice.retrained == alice.claimed and alice.flags == []  # same CPU, one thread
    carol = worker.grade(Job(1, graded_class.zip("carol"), "carol"))
    assert any(flag.startswith("retrained on the CPU: test accuracy") for flag in carol.flags)
    assert (tmp_path / "retrained" / "alice").is_dir()


def test_weights_trained_on_other_rows_are_flagged(graded_class: Class, tmp_path: Path) -> None:
    """A run trained with another seed (another split), its configs put back to seed 0 and
    its summary.json made to fit: the preprocessing in model.safetensors (the training rows'
    statistics) and the dev claim give it away, without retraining."""
    from safetensors.torch import load, save

    from dlcourse.app.handin_grading import Job

    bundle = tmp_path / "mallory.zip"
    shutil.copy(graded_class.zip("alice"), bundle)
    with zipfile.ZipFile(bundle) as archive:
        weights = archive.read("model.safetensors")
        summary_record = json.loads(archive.read("summary.json"))
        epochs = [json.loads(line) for line in archive.read("metrics.jsonl").splitlines()]
    header = json.loads(weights[8 : 8 + int.from_bytes(weights[:8], "little")])
    metadata = header["__metadata__"]
    preprocess = json.loads(metadata["preprocess"])
    preprocess["mean"][0] += 0.2  # CreditScore's mean, from other training rows
    metadata["preprocess"] = json.dumps(preprocess)
    kept = summary_record["kept_epoch"]  # a claim made on another dev split, told alike
    for record in [summary_record, summary_record["best"], summary_record["last"], *epochs]:
        if record is summary_record or record["epoch"] == kept:
            record["dev"]["accuracy"] -= 0.005
    lines = "".join(json.dumps(record) + "\n" for record in epochs)
    rewrite(bundle, {"model.safetensors": save(load(weights), metadata),
                     "summary.json": json.dumps(summary_record).encode(),
                     "metrics.jsonl": lines.encode()})  # fmt: skip
    row = grader(graded_class, tmp_path / "out", reports=False).grade(Job(0, bundle, "m"))
    assert row.reasons == [] and len(row.flags) == 2, row.flags
    assert row.flags[0].startswith("claimed dev accuracy ")
    assert row.flags[1].startswith(
        "the weights were trained on other rows than the assignment's locked data and split: "
        "their preprocessing differs (mean[0]: "
    )
    honest = grader(graded_class, tmp_path / "out2", reports=False).grade(
        Job(0, graded_class.zip("alice"), "alice")
    )
    assert honest.flags == []


def test_preprocessing_difference_known_answers() -> None:
    from dlcourse.grading.measure import preprocessing_difference

    locked = {"mean": [650.816, 38.9], "categories": {"Geography": ["France", "Spain"]}}
    same = {"mean": [650.816 * (1 + 1e-12), 38.9], "categories": {"Geography": ["France", "Spain"]}}
    assert preprocessing_difference(same, locked) is None
    other = {"mean": [650.621, 38.9], "categories": {"Geography": ["France", "Spain"]}}
    assert preprocessing_difference(other, locked) == (
        "mean[0]: 650.621 where the locked split gives 650.816"
    )
    fewer = {"mean": [650.816, 38.9], "categories": {"Geography": ["France"]}}
    assert preprocessing_difference(fewer, locked) == (
        'categories.Geography: ["France"] where the locked split gives ["France", "Spain"]'
    )


def test_hidden_test_data_is_measured_and_the_claim_still_checked(
    graded_class: Class, tmp_path: Path
) -> None:
    from dlcourse.app.handin_grading import Job

    hidden = write_csv(tmp_path / "hidden.csv", CHURN_HEADER, churn_rows(300, seed=5))
    worker = grader(graded_class, tmp_path / "out", test_data=hidden, reports=False)
    row = worker.grade(Job(0, graded_class.zip("alice"), "alice"))
    assert row.flags == [] and row.reproduced == row.claimed
    assert row.measured is not None and row.measured != row.reproduced  # another 300 customers
    carol = worker.grade(Job(1, graded_class.zip("carol"), "carol"))
    assert any("claimed test accuracy 99.00%" in flag for flag in carol.flags)


def test_a_csv_regression_assignment_is_graded_in_the_targets_units(tmp_path: Path) -> None:
    """A csv task trains on a standardized target: the grader's RMSE, on the assignment's
    split and on a hidden CSV, is in the target's units, as summary.json's and evaluate's."""
    from dlcourse.tools.evaluate import evaluate_table

    prices, hidden = tmp_path / "prices.csv", tmp_path / "hidden.csv"
    for path, seed in ((prices, "0"), (hidden, "1")):
        made = invoke("data", "make", "house-prices", "--out", path, "--rows", "300",
                      "--seed", seed)  # fmt: skip
        assert made.exit_code == 0, made.output
    assignment = tmp_path / "prices.assignment.yaml"
    assignment.write_text(
        f"title: House prices\nquestion: Predict the price.\n"
        f"config: {{task: csv, data: {{path: {json.dumps(str(prices))}, target: price}},"
        f" train: {{epochs: 5}}}}\n"
        f"locked: [task, seed, data]\ntarget: {{metric: rmse, threshold: 100000}}\n"
    )
    run = train(assignment, tmp_path / "runs", tmp_path)
    (tmp_path / "handins").mkdir()
    handin(run, "ann", tmp_path / "handins" / "ann.zip", tmp_path)
    book = dlcourse.grade(assignment, tmp_path / "handins", out=tmp_path / "graded",
                          data_dir=tmp_path, test_data=hidden, reports=False)  # fmt: skip
    ann = book.row("ann")
    assert ann.status == "graded" and ann.flags == [], ann.reasons or ann.flags
    assert ann.claimed is not None and ann.claimed > 1_000  # dollars, not standard deviations
    assert ann.reproduced == pytest.approx(ann.claimed, rel=1e-5)
    on_hidden = evaluate_table(run, data_dir=tmp_path, path=hidden).metrics["rmse"]
    assert ann.measured == pytest.approx(on_hidden, rel=1e-5) and ann.measured != ann.claimed
    # a hidden CSV without the target column stops the grading at once, naming both
    bad = write_csv(tmp_path / "bad.csv", ["area", "bedrooms"], [["1", "2"]])
    result = invoke("grade", assignment, tmp_path / "handins", "--out", tmp_path / "again",
                    "--data-dir", tmp_path, "--test-data", bad)  # fmt: skip
    assert result.exit_code == 2 and "bad.csv: missing target column" in result.output
    assert "price" in result.output and not (tmp_path / "again").exists()


def test_the_graders_own_mistakes_stop_the_grading_before_any_handin(
    graded_class: Class, tmp_path: Path
) -> None:
    """No data, a mistyped folder, a run folder among the zips: exit 2 naming it, nothing
    written (they made every row `rejected`, or were dropped, with exit 0)."""
    out = tmp_path / "graded"
    cases = [
        (["--data-dir", tmp_path / "nothing"], [graded_class.handins],
         "churn/Churn_Modelling.csv: file not found"),
        (["--data-dir", graded_class.data], [graded_class.root / "handin"],
         "handin: no such file or folder (give zips, or folders of zips)"),
        (["--data-dir", graded_class.data], [graded_class.zip("alice"), graded_class.runs["bob"]],
         "a folder without .zip files (a run folder is handed in with `dlcourse handin"),
    ]  # fmt: skip
    for options, submissions, message in cases:
        result = invoke("grade", CHURN, *submissions, "--out", out, *options)
        assert result.exit_code == 2 and message in result.output, result.output
        assert not out.exists()
    result = invoke("grade", CHURN, graded_class.handins, "--out", out, "--data-dir",
                    tmp_path / "nothing")  # fmt: skip
    assert "give --test-data" in result.output  # what to do


def test_a_hidden_set_with_a_category_training_never_had_is_noted(
    graded_class: Class, tmp_path: Path
) -> None:
    rows = churn_rows(200, seed=3)
    for row in rows:
        row[CHURN_HEADER.index("Geography")] = "Italy"
    hidden = write_csv(tmp_path / "italy.csv", CHURN_HEADER, rows)
    graded = tmp_path / "graded"
    result = invoke("grade", CHURN, graded_class.zip("alice"), "--out", graded, "--data-dir",
                    graded_class.data, "--test-data", hidden, "--no-reports")  # fmt: skip
    assert result.exit_code == 0, result.output
    note = ("note: column Geography: 'Italy' never occurred in the training rows; encoded as "
            "none of the known values (France, Germany, Spain)")  # fmt: skip
    assert note in result.output
    assert html.escape(note) in (graded / "class.html").read_text()


def test_grading_piped_into_head_still_writes_the_gradebook(
    graded_class: Class, tmp_path: Path
) -> None:
    """`dlcourse grade ... | head -1`: the reader leaves after one line; the grading goes on
    (it ended with an internal error and no gradebook)."""
    out = tmp_path / "graded"
    command = [sys.executable, "-m", "dlcourse", "grade", str(CHURN), str(graded_class.handins),
               "--out", str(out), "--data-dir", str(graded_class.data), "--no-reports"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # as head does
    errors = process.stderr.read().decode()
    assert process.wait(timeout=600) == 0, errors
    assert first.startswith(b"  alice (alice.zip): measured ") and errors == ""
    assert read_gradebook(out) == read_gradebook(graded_class.graded)


def test_grading_from_an_unguarded_script_says_what_to_do(
    graded_class: Class, tmp_path: Path
) -> None:
    script = tmp_path / "grade_class.py"
    script.write_text(
        "import dlcourse\n"
        f"dlcourse.grade({str(CHURN)!r}, {str(graded_class.zip('alice'))!r}, "
        f"out={str(tmp_path / 'graded')!r}, data_dir={str(graded_class.data)!r}, reports=False)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=REPO, timeout=600)  # fmt: skip
    assert done.returncode == 1
    assert (
        "a grading process ended while starting. Called from a script (grade_class.py), "
        'dlcourse.grade must run under `if __name__ == "__main__":`'
    ) in done.stderr


def test_a_handin_past_the_time_limit_is_rejected(graded_class: Class) -> None:
    out = graded_class.root / "slow"
    result = invoke("grade", CHURN, graded_class.zip("alice"),
                    "--out", out, "--data-dir", graded_class.data, "--time-limit", "0.01",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_gradebook(out)
    assert rows["alice"]["status"] == "rejected"
    assert "took longer than the time limit of 0.01 s" in rows["alice"]["flags"]


# ------------------------------------------------------------------ the pages in a browser


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") and os.environ.get("DLCOURSE_BROWSER_TEST") != "skip":
            pytest.fail("CI is set but chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def browse(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def assert_not_blank(png: Path) -> None:
    from PIL import Image

    with Image.open(png) as image:
        pixels = image.convert("RGB")
        colors = pixels.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 50, f"{png}: {len(colors)} colours; a blank page has a few"
    background = max(count for count, _ in colors)
    assert background < 0.97 * pixels.width * pixels.height


def test_the_class_page_and_a_report_in_chromium(graded_class: Class, tmp_path: Path) -> None:
    page = graded_class.graded / "class.html"
    dom = browse(page, tmp_path, "--dump-dom").stdout
    assert 'id="students-table"' in dom and dom.count('<tr class="row-') == 7
    assert 'id="histogram"' in dom and '<rect class="bar' in dom and 'class="target"' in dom
    assert 'id="flags"' in dom and "identical weights to carol" in dom
    assert 'href="reports/alice.html"' in dom and "Leaderboard" in dom
    assert "&lt;" not in dom.split("<body>")[0]  # nothing escaped into the head
    browse(page, tmp_path, f"--screenshot={tmp_path / 'class.png'}", "--window-size=1200,2000")
    assert_not_blank(tmp_path / "class.png")
    clicked = tmp_path / "clicked.html"  # the table sorts: click "measured" twice (descending)
    click = "<script>var th = document.querySelectorAll('th')[3]; th.click(); th.click();</script>"
    clicked.write_text(page.read_text().replace("</body>", click + "</body>"))
    dom = browse(clicked, tmp_path, "--dump-dom").stdout
    order = [dom.index(f'data-value="{name}">{name}</td>') for name in ("alice", "bob", "frank")]
    assert order[0] < order[1] < order[2] and 'class="sorted-down"' in dom
    report = graded_class.graded / "reports" / "alice.html"
    dom = browse(report, tmp_path, "--dump-dom").stdout
    assert "Result" in dom and "<table" in dom and "data:image/png;base64," in dom
    browse(report, tmp_path, f"--screenshot={tmp_path / 'report.png'}", "--window-size=1200,2000")
    assert_not_blank(tmp_path / "report.png")


# ------------------------------------------------------------------ assignment files


def test_assignment_show_prints_the_question_rules_target_and_grading() -> None:
    result = invoke("assignment", "show", CHURN)
    assert result.exit_code == 0, result.output
    for text in ("# Churn: which bank customers leave?", "model.hidden", "a list of at most 3 "
                 "items, each from 1 to 256", "Locked (these stay as the base config has "
                 "them): task, seed, data", "test accuracy >= 85.50%", "10 points"):  # fmt: skip
        assert text in result.output


def test_assignment_show_does_not_import_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from dlcourse.cli import app; "
        f"r = CliRunner().invoke(app, ['assignment', 'show', {str(MNIST)!r}]); "
        "assert r.exit_code == 0, r.output; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("path", ASSIGNMENTS, ids=lambda path: path.name)
def test_each_shipped_assignment_trains_and_passes_its_check(path: Path, tmp_path: Path) -> None:
    data = write_tiny_mnist(tmp_path / "data")
    write_csv(data / "churn" / "Churn_Modelling.csv", CHURN_HEADER, churn_rows(400))
    tiny = {"mnist.assignment.yaml": ["train.batch_size=32"]}.get(path.name, [])
    run = train(path, tmp_path / "runs", data, "train.epochs=1", *tiny)
    assert (run / "assignment.yaml").is_file()
    result = invoke("assignment", "check", path, run)
    assert result.exit_code == 0, result.output
    assert "  ok    locks kept" in result.output and "ready to hand in" in result.output


def test_mnist_hidden_idx_files_are_read_as_the_test_split(tmp_path: Path) -> None:
    """Given the very t10k files of the assignment's own test split as the hidden set, the
    grader measures exactly the claimed number."""
    data = write_tiny_mnist(tmp_path / "data")
    run = train(MNIST, tmp_path / "runs", data, "train.epochs=1", "train.batch_size=32")
    (tmp_path / "handins").mkdir()
    handin(run, "ben", tmp_path / "handins" / "ben.zip", data)
    book = dlcourse.grade(MNIST, tmp_path / "handins" / "ben.zip", out=tmp_path / "graded",
                          data_dir=data, test_data=data, reports=False)  # fmt: skip
    ben = book.row("ben")
    assert ben.flags == [] and ben.measured is not None
    assert ben.measured == ben.reproduced == pytest.approx(ben.claimed, abs=1e-9)
    assert book.measured_on == "the hidden test set data"  # (a folder holding MNIST/raw/)


def test_train_refuses_a_locked_key_and_a_value_out_of_range(tmp_path: Path) -> None:
    result = invoke("train", CHURN, "--runs-dir", tmp_path / "runs", "--set", "seed=3",
                    "--set", "model.hidden=[512]", "--set", "train.epochs=101")  # fmt: skip
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert f"{CHURN}: the assignment does not allow this config (3 problems):" in lines[0]
    assert f"  seed (from the command line): locked by the assignment (seed); 0 -> 3 ({CHURN}:" in (
        result.output
    )
    assert "  model.hidden (from the command line): [512]: an item above the largest allowed, " in (
        result.output
    )
    assert "train.epochs (from the command line): 101: above the largest allowed, 100" in (
        result.output
    )
    assert not (tmp_path / "runs").exists()
    own = tmp_path / "mine.yaml"
    own.write_text("task: churn\nseed: 1\ndata: {split: {train: 0.8, dev: 0.1, test: 0.1}}\n")
    result = invoke("train", own, "--assignment", CHURN, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and f"seed ({own}:2): locked" in result.output


def test_a_budget_over_the_limit_is_refused_before_training(tmp_mnist: Path) -> None:
    result = invoke("train", MNIST, "--runs-dir", tmp_mnist / "runs", "--data-dir", tmp_mnist,
                    "--set", "model.hidden=[512]")  # fmt: skip
    assert result.exit_code == 2
    assert "model: 813,306 parameters, more than the budget of 250,000 (" in result.output
    assert not (tmp_mnist / "runs").exists()


@pytest.fixture
def tmp_mnist(tmp_path: Path) -> Path:
    return write_tiny_mnist(tmp_path / "data")


def write_assignment(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.assignment.yaml"
    path.write_text(text)
    return path


BASE = "title: t\nquestion: q\nconfig: {task: churn}\ntarget: {metric: accuracy, threshold: 0.8}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "lockd: [seed]\n", "lockd (line 5): unknown key; did you mean 'locked'?"),
        (BASE + "locked: [sed]\n", "locked.0 (line 5): 'sed' is not a config key; did you mean "
         "'seed'?"),
        (BASE + "free: {model.hiden: any}\n", "'model.hiden' is not a config key; did you mean "
         "'model.hidden'?"),
        (BASE + "free: {train.epochs: {max: 5}}\n", "the base config breaks its own rule: "
         "train.epochs: 10: above the largest allowed, 5"),
        (BASE + "locked: [seed]\nfree: {seed: any}\n", "seed is both locked and free"),
        (BASE.replace("accuracy", "acuracy"), "'acuracy' is not a metric of the churn task; did "
         "you mean 'accuracy'?"),
        (BASE + "title: again\n", "duplicate key on line 5; first given on line 1"),
        (BASE.replace("{task: churn}", "{task: churn, optim: {lr: -1}}"),
         "optim.lr (line 3): Input should be greater than 0"),
        (BASE + "free: {optim.name: {max: 1}}\n", "min and max need numbers, but optim.name is "
         '"adam"'),
        (BASE.replace("0.8}", "85.5}"), "target.threshold (line 4): 85.5: accuracy is at most 1; "
         "did you mean 0.855?"),
        (BASE + "grading: {points: [{at: 0.9, points: 10}, {at: 80, points: 3}]}\n",
         "grading.points.1.at (line 5): 80: accuracy is at most 1; did you mean 0.8?"),
        (BASE.replace("accuracy, threshold: 0.8", "loss, threshold: -0.1"),
         "target.threshold (line 4): -0.1: loss is never below 0"),
    ],
    ids=["unknown key", "locked typo", "free typo", "base breaks rule", "locked and free",
         "metric", "duplicate", "base config", "rule type", "percent", "points level",
         "negative loss"],
)  # fmt: skip
def test_a_bad_assignment_file_is_refused_with_its_line(
    tmp_path: Path, text: str, message: str
) -> None:
    result = invoke("assignment", "show", write_assignment(tmp_path, text))
    assert result.exit_code == 2 and message in result.output, result.output


# ------------------------------------------------------------------ assignment check


def test_assignment_check_catches_each_kind_of_mistake(graded_class: Class, tmp_path: Path) -> None:
    alice = graded_class.runs["alice"]

    def check(run: Path, assignment: Path = CHURN):
        return invoke("assignment", "check", assignment, run)

    def copy(name: str) -> Path:
        return Path(shutil.copytree(alice, tmp_path / name))

    ok = check(alice)
    assert ok.exit_code == 0 and "FAIL" not in ok.output
    below = check(graded_class.runs["bob"])  # below the target: a note, not a mistake
    assert below.exit_code == 0 and "note  the target on the dev split" in below.output
    locked = copy("locked")
    text = (locked / "config.yaml").read_text()
    (locked / "config.yaml").write_text(text.replace("seed: 0", "seed: 5"))
    result = check(locked)
    assert result.exit_code == 2 and "FAIL  locks kept: seed: locked" in result.output
    assert "FAIL  model.safetensors matches config.yaml" in result.output
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(yaml.safe_load(CHURN.read_text())["config"]))
    wide = train(
        base, tmp_path / "wide", graded_class.data, "model.hidden=[300]", "train.epochs=1"
    )  # a plain config, not the assignment: nothing stopped it
    result = check(wide)
    assert result.exit_code == 2 and "FAIL  free values in range: model.hidden: [300]" in (
        result.output
    )
    unfinished = copy("unfinished")
    (unfinished / "summary.json").unlink()
    result = check(unfinished)
    assert result.exit_code == 2 and "FAIL  the run is complete: summary.json is missing" in (
        result.output
    )
    edited = copy("edited")
    summary = json.loads((edited / "summary.json").read_text())
    summary["dev"]["accuracy"] = 1.0
    (edited / "summary.json").write_text(json.dumps(summary))
    result = check(edited)
    assert result.exit_code == 2 and "FAIL  summary.json agrees with metrics.jsonl: dev " in (
        result.output
    )
    result = check(alice, MNIST)  # the wrong assignment
    assert result.exit_code == 2 and "FAIL  the assignment: the run was trained for 'Churn" in (
        result.output
    )
    refused = invoke("handin", locked, "--student", "x", "--out", tmp_path / "x.zip",
                     "--data-dir", graded_class.data)  # fmt: skip
    assert refused.exit_code == 2 and "not handed in; fix these first" in refused.output
    assert not (tmp_path / "x.zip").exists()


# ------------------------------------------------------------------ untrusted bundles


def zip_of(path: Path, entries: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return path


HANDIN = {name: b"x" for name in ("manifest.json", "config.yaml", "metrics.jsonl",
                                   "summary.json", "model.safetensors", "report.html",
                                   "assignment.yaml")}  # fmt: skip


@pytest.mark.parametrize(
    ("entries", "symlink", "reason"),
    [
        ({**HANDIN, "/etc/cron.d/x": b""}, None, 'unsafe entry "/etc/cron.d/x"'),
        ({**HANDIN, "a/../../x": b""}, None, 'unsafe entry "a/../../x"'),
        ({**HANDIN, "C:x": b""}, None, 'unsafe entry "C:x"'),
        ({**HANDIN, "a\\..\\x": b""}, None, 'unsafe entry "a\\\\..\\\\x"'),
        (HANDIN, "link", 'unsafe entry "link": a symbolic link'),
        ({**HANDIN, "checkpoints/best.pt": b""}, None, 'unexpected entry "checkpoints/best.pt"'),
        ({k: v for k, v in HANDIN.items() if k != "model.safetensors"}, None,
         "not a complete hand-in: missing model.safetensors"),
        ({**HANDIN, "summary.json": b" " * (2 * 2**20)}, None, 'oversized entry "summary.json"'),
        ({**HANDIN, "report.html": b"0" * (20 * 2**20)}, None, 'entry "report.html" expands'),
        ({**HANDIN, **{f"x{i}": b"" for i in range(20)}}, None, "27 entries"),
    ],
    ids=["absolute", "dotdot", "drive", "backslash", "symlink", "pickle", "missing",
         "oversized", "bomb", "count"],
)  # fmt: skip
def test_an_unsafe_or_odd_bundle_is_rejected(
    tmp_path: Path, entries: dict[str, bytes], symlink: str | None, reason: str
) -> None:
    from dlcourse.grading.bundle import Rejected, read_bundle

    with pytest.raises(Rejected) as raised:
        read_bundle(zip_of(tmp_path / "b.zip", entries, symlink))
    assert reason in str(raised.value)


def test_duplicate_entries_and_damaged_zips_are_rejected(tmp_path: Path) -> None:
    from dlcourse.grading.bundle import Rejected, read_bundle

    path = zip_of(tmp_path / "dup.zip", HANDIN)
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as archive:
        archive.writestr("config.yaml", b"again")  # zipfile warns: Duplicate name
    for broken, reason in ((path, 'two entries named "config.yaml"'),
                           (tmp_path / "none.zip", "missing: no such file")):  # fmt: skip
        with pytest.raises(Rejected, match=reason):
            read_bundle(broken)
    (tmp_path / "text.zip").write_text("not a zip")
    with pytest.raises(Rejected, match="corrupt: not a readable zip file"):
        read_bundle(tmp_path / "text.zip")


# ------------------------------------------------------------------ the gradebook and page


def test_gradebook_cells_are_formula_safe_and_the_page_escapes_them(tmp_path: Path) -> None:
    from dlcourse.grading.assignment import load_assignment
    from dlcourse.grading.classpage import write_class_page
    from dlcourse.grading.gradebook import Row, csv_text, finish_rows

    assignment = load_assignment(CHURN)
    rows = finish_rows([
        Row("s1", "=HYPERLINK(\"http://x\").zip", measured=0.9, reproduced=0.9, claimed=0.9),
        Row("s2", "b.zip", reasons=["<script>alert(1)</script> in the manifest"]),
    ], assignment)  # fmt: skip
    text = csv_text(rows)
    assert "'=HYPERLINK" in text and "\n=" not in text and ",=" not in text
    page = write_class_page(rows, assignment, tmp_path / "class.html", tmp_path, "the test split")
    html_text = page.read_text()
    assert "<script>alert(1)</script>" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "Content-Security-Policy" in html_text and "http://" not in html_text.replace(
        "http://www.w3.org/2000/svg", "").replace("HYPERLINK(&quot;http://x", "")  # fmt: skip


def test_class_wide_flags_identical_weights_and_configs_and_two_handins() -> None:
    from dlcourse.grading.assignment import load_assignment
    from dlcourse.grading.gradebook import Row, finish_rows, shared_configs

    def row(student: str, bundle: str, weights: str, config: str, base: bool = False) -> Row:
        return Row(student, bundle, measured=0.86, weights_digest=weights, config_digest=config,
                   config_is_base=base)  # fmt: skip

    rows = finish_rows([
        row("ann", "ann.zip", "w1", "c1"), row("ben", "ben.zip", "w1", "c1"),
        row("cat", "cat.zip", "w2", "c0", base=True), row("dan", "dan.zip", "w2", "c0", base=True),
        row("cat", "cat-late.zip", "w2", "c0", base=True),
        row("eve", "eve.zip", "w4", "c2"), row("fay", "fay.zip", "w4", "c3"),
        row("gus", "gus.zip", "w5", "c5"), row("gus", "gus-2.zip", "w5", "c5"),
    ], load_assignment(CHURN))  # fmt: skip
    flags = {(r.student, r.bundle): r.flags for r in rows}
    # one config, one set of weights (the seed is locked): the same changes are no flag
    assert flags[("ann", "ann.zip")] == flags[("ben", "ben.zip")] == []
    assert flags[("dan", "dan.zip")] == []  # the base config, unchanged: nothing to say
    assert flags[("cat", "cat.zip")] == ["2 hand-ins from cat: cat-late.zip, cat.zip"]
    assert flags[("eve", "eve.zip")] == ["identical weights to fay's, trained with another config"]
    statuses = ["graded"] * 2 + ["flagged"] * 2 + ["graded"] + ["flagged"] * 4
    assert [r.status for r in rows] == statuses  # gus: two hand-ins, not a shared config
    assert all(r.grade == 10 for r in rows)
    assert shared_configs(rows) == [
        "the same config (not the base config), and the same weights: ann (ann.zip), ben (ben.zip)"
    ]


def test_points_and_late_handins() -> None:
    import datetime

    from dlcourse.grading.assignment import Late, load_assignment

    assignment = load_assignment(CHURN)
    assert [assignment.points(v) for v in (0.86, 0.855, 0.851, 0.845, 0.81, 0.5)] == [
        10, 10, 8, 6, 3, 0]  # fmt: skip
    deadline = datetime.datetime(2026, 6, 1, 23, 59, tzinfo=datetime.timezone.utc)
    assignment.spec.grading.late = Late(deadline=deadline, per_day=0.1, max_days=3)
    hours = datetime.timedelta(hours=1)
    assert assignment.late_penalty(deadline) == (0, 1.0)
    assert assignment.late_penalty(deadline + hours) == (1, 0.9)
    assert assignment.late_penalty(deadline + 25 * hours) == (2, 0.8)
    assert assignment.late_penalty(deadline + 97 * hours) == (5, 0.0)
