"""Prompt styles: A1111's styles.csv format and its apply / extract semantics."""
import errno

import pytest

from modules.conditioning.styles import PromptStyle, StyleDatabase, StyleError

CSV = (
    "name,prompt,negative_prompt\n"
    "cinematic,\"cinematic still of {prompt}, film grain\",\"cartoon, drawing\"\n"
    "sharp,\"sharp focus, 8k\",blurry\n"
    "moody,dark lighting,\n"
    "negonly,,\"lowres, bad hands\"\n"
    "empty,,\n"
)


@pytest.fixture
def db(tmp_path) -> StyleDatabase:
    path = tmp_path / "styles.csv"
    path.write_text(CSV, encoding="utf-8")
    return StyleDatabase(path)


@pytest.mark.parametrize("prompt, names, expected", [
    ("a cat", ["cinematic"], "cinematic still of a cat, film grain"),
    ("a cat", ["sharp"], "a cat, sharp focus, 8k"),
    ("  a cat  ", ["sharp"], "a cat, sharp focus, 8k"),  # appending strips the prompt
    ("", ["sharp"], "sharp focus, 8k"),
    ("", ["cinematic"], "cinematic still of , film grain"),  # placeholder takes the prompt as it is
    ("a cat", ["sharp", "moody"], "a cat, sharp focus, 8k, dark lighting"),
    ("a cat", ["moody", "sharp"], "a cat, dark lighting, sharp focus, 8k"),
    ("a cat", ["sharp", "cinematic"], "cinematic still of a cat, sharp focus, 8k, film grain"),
    ("a cat", ["cinematic", "sharp"], "cinematic still of a cat, film grain, sharp focus, 8k"),
    ("a cat", ["no such style", "sharp"], "a cat, sharp focus, 8k"),
    ("a cat", ["negonly"], "a cat"),
    ("a cat", [], "a cat"),
])
def test_apply_to_prompt(db, prompt, names, expected):
    assert db.apply_to_prompt(prompt, names) == expected


@pytest.mark.parametrize("negative, names, expected", [
    ("", ["negonly"], "lowres, bad hands"),
    ("ugly", ["negonly", "sharp"], "ugly, lowres, bad hands, blurry"),
    ("ugly", ["cinematic"], "ugly, cartoon, drawing"),
    ("ugly", ["moody"], "ugly"),
])
def test_apply_to_negative(db, negative, names, expected):
    assert db.apply_to_negative(negative, names) == expected


def test_reads_a1111_file(db):
    assert db.error is None
    assert db.names() == ["cinematic", "sharp", "moody", "negonly", "empty"]
    assert db.styles["cinematic"] == PromptStyle("cinematic", "cinematic still of {prompt}, film grain",
                                                 "cartoon, drawing")
    assert db.styles["moody"].negative_prompt == ""


def test_bom_extra_columns_quoted_newlines_and_comments(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_bytes(
        "\ufeffname,prompt,negative_prompt,description\n"
        "# a comment line,ignored,,\n"
        "poster,\"bold, \"\"flat\"\" colours\nsecond line\",\"photo\",shown in A1111 forks\n"
        "ünïcode,日本画,,\n"
        "\n".encode("utf-8"))
    db = StyleDatabase(path)
    assert db.error is None
    assert db.names() == ["poster", "ünïcode"]
    assert db.styles["poster"] == PromptStyle("poster", 'bold, "flat" colours\nsecond line', "photo")
    assert db.styles["ünïcode"].prompt == "日本画"


def test_missing_negative_column_and_old_text_column(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text("name,prompt\nsharp,sharp focus\n")
    assert StyleDatabase(path).styles["sharp"] == PromptStyle("sharp", "sharp focus", "")
    path.write_text("name, text\nold,old style\n")  # A1111's first format, with a space after the comma
    assert StyleDatabase(path).styles["old"] == PromptStyle("old", "old style", "")


def test_missing_or_empty_file_is_an_empty_database(tmp_path):
    db = StyleDatabase(tmp_path / "styles.csv")
    assert db.styles == {} and db.error is None
    (tmp_path / "styles.csv").write_text("")
    db.reload()
    assert db.styles == {} and db.error is None


@pytest.mark.parametrize("content, reason", [
    (b"\xff\xfe\x00b\x00r\x00o\x00k\x00e\x00n", "codec"),  # UTF-16, not UTF-8
    (b"title,text_of_style\nx,y\n", "expected a header line with the columns name, prompt, negative_prompt"),
])
def test_broken_file_gives_message_and_is_not_overwritten(tmp_path, content, reason):
    path = tmp_path / "styles.csv"
    path.write_bytes(content)
    db = StyleDatabase(path)
    assert db.styles == {}
    assert db.error and str(path) in db.error and reason in db.error
    with pytest.raises(StyleError, match="Fix or remove"):
        db.save_style(PromptStyle("new", "x"))
    assert path.read_bytes() == content


def test_save_reload_delete_round_trip(db):
    path = db.path
    original = path.read_bytes()
    db.save_style(PromptStyle("new", 'with "quotes", commas\nand a newline', "neg"))
    db.save_style(PromptStyle("sharp", "sharper", ""))  # overwrite keeps its place
    assert (path.parent / "styles.csv.bak").read_bytes() != original  # backup of the file before the 2nd save

    again = StyleDatabase(path)
    assert again.names() == ["cinematic", "sharp", "moody", "negonly", "empty", "new"]
    assert again.styles["new"] == PromptStyle("new", 'with "quotes", commas\nand a newline', "neg")
    assert again.styles["sharp"] == PromptStyle("sharp", "sharper", "")
    assert path.read_bytes().startswith("\ufeffname,prompt,negative_prompt\r\n".encode())  # as A1111 writes

    assert again.delete_style("cinematic") is True
    assert again.delete_style("cinematic") is False
    db.reload()
    assert db.names() == ["sharp", "moody", "negonly", "empty", "new"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["styles.csv", "styles.csv.bak"]


def test_first_save_creates_file_and_backup_holds_previous_version(tmp_path):
    path = tmp_path / "sub" / "styles.csv"
    db = StyleDatabase(path)
    db.save_style(PromptStyle("a", "one"))
    assert not (path.parent / "styles.csv.bak").exists()
    first = path.read_bytes()
    db.save_style(PromptStyle("b", "two"))
    assert (path.parent / "styles.csv.bak").read_bytes() == first
    assert sorted(p.name for p in path.parent.iterdir()) == ["styles.csv", "styles.csv.bak"]  # no temp file left


@pytest.mark.parametrize("error, message", [(OSError(errno.ENOSPC, "No space left on device"), "disk full"),
                                            (OSError(errno.EACCES, "Permission denied"), "cannot write styles")])
def test_failed_write_changes_nothing(db, monkeypatch, error, message):
    db.save_style(PromptStyle("first", "x"))  # now there is a backup
    before = db.path.read_bytes()

    def fail(*_):
        raise error

    monkeypatch.setattr("modules.user_files.os.replace", fail)
    with pytest.raises(StyleError, match=message):
        db.save_style(PromptStyle("new", "x"))
    assert "new" not in db.styles and db.path.read_bytes() == before
    assert sorted(p.name for p in db.path.parent.iterdir()) == ["styles.csv", "styles.csv.bak"]  # no temp file


def test_save_keeps_styles_another_program_added(db):
    with open(db.path, "a", encoding="utf-8", newline="") as f:
        f.write("added elsewhere,by hand,\r\n")
    db.save_style(PromptStyle("new", "x"))
    assert {"added elsewhere", "new"} <= set(StyleDatabase(db.path).names())


@pytest.mark.parametrize("name", ["", "  ", "#comment"])
def test_save_rejects_names_that_would_not_read_back(db, name):
    with pytest.raises(ValueError):
        db.save_style(PromptStyle(name, "x"))


@pytest.mark.parametrize("prompt, negative, names", [
    ("a cat", "ugly", ["sharp"]),
    ("a cat", "ugly", ["cinematic"]),
    ("a cat", "ugly", ["cinematic", "sharp"]),
    ("a cat", "ugly", ["sharp", "cinematic"]),
    ("a cat", "ugly", ["moody", "negonly", "sharp"]),
    ("", "", ["sharp"]),
    ("", "", ["sharp", "negonly"]),
    ("a cat,", "", ["moody"]),
    ("a cat", "ugly", []),
])
def test_extract_styles_inverts_apply(db, prompt, negative, names):
    full = db.apply_to_prompt(prompt, names)
    full_negative = db.apply_to_negative(negative, names)
    rest, rest_negative, found = db.extract_styles(full, full_negative)
    assert (rest, rest_negative, sorted(found)) == (prompt, negative, sorted(names))
    # the order is recovered where it matters ("moody" and "negonly" commute)
    assert (db.apply_to_prompt(rest, found), db.apply_to_negative(rest_negative, found)) == (full, full_negative)


@pytest.mark.parametrize("prompt, negative, expected", [
    # positive matches but the negative does not: the style was not applied
    ("a cat, sharp focus, 8k", "ugly", ("a cat, sharp focus, 8k", "ugly", [])),
    # only whole comma-separated parts count: "a bored cat" does not end with style text "d cat"
    ("a bored dark lighting", "", ("a bored dark lighting", "", [])),
    ("  cinematic still of a dog, film grain ", "cartoon, drawing", ("a dog", "", ["cinematic"])),
])
def test_extract_styles_only_what_was_applied(db, prompt, negative, expected):
    assert db.extract_styles(prompt, negative) == expected


def test_placeholder_used_twice(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text('name,prompt,negative_prompt\ntwice,"{prompt} and again {prompt}",\n')
    db = StyleDatabase(path)
    full = db.apply_to_prompt("x, y", ["twice"])
    assert full == "x, y and again x, y"
    assert db.extract_styles(full, "") == ("x, y", "", ["twice"])
    assert db.extract_styles("x and again z", "") == ("x and again z", "", [])
