"""`pprl withdraw`, `pprl project remove-party` and `pprl project delete` against an in-process service."""

import pytest

from linkage.encodings import read_encodings
from tests.helpers import EXAMPLE_PROTOCOL, SERVER, invoke


def tokens_of(out_dir):
    return [token.tobytes().hex() for token in read_encodings(out_dir).records["token"]]


@pytest.mark.usefixtures("service")
def test_withdraw_remove_party_and_delete_from_the_command_line(runner, admin_file, agencies, tmp_path):
    tokens = tmp_path / "tokens"
    created = invoke(runner, "project", "create", "--server", SERVER, "--admin-secret-file", admin_file,
                     "--protocol", EXAMPLE_PROTOCOL, "--out-dir", tokens)  # fmt: skip
    assert created.exit_code == 0, created.output
    project_id = created.output.split()[1].rstrip(":")
    for party in ("msd", "police", "haven"):
        uploaded = invoke(runner, "upload", "--server", SERVER, "--token-file", tokens / f"{party}.token",
                          agencies[party], "--quiet")  # fmt: skip
        assert uploaded.exit_code == 0, uploaded.output
    msd = ("--server", SERVER, "--token-file", tokens / "msd.token")

    # The key map's rows of the clients who leave, header kept: only the tokens are sent.
    keymap = (agencies["msd"] / "keymap.csv").read_text().splitlines()
    leaving = tmp_path / "leaving.csv"
    leaving.write_text("\n".join(keymap[:4]) + "\n")
    done = invoke(runner, "withdraw", *msd, "--tokens-file", leaving, "--yes")
    assert done.exit_code == 0, done.output
    left = len(tokens_of(agencies["msd"])) - 3
    assert f"withdrew 3 record(s) of party msd, {left} left" in done.output
    assert not any(line.split(",")[1] in done.output for line in keymap[1:4]), "client ids stay at the agency"

    # A file with a client id where a token belongs: every bad line named, the fix said, the value not echoed.
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{tokens_of(agencies['msd'])[10]}\nCLIENT-0042\n\n# a comment\nxyz\n")
    refused = invoke(runner, "withdraw", *msd, "--tokens-file", bad, "--yes")
    assert refused.exit_code == 1
    assert "bad.txt: 2 line(s) are not tokens; write one token from keymap.csv per line" in refused.output
    assert "CLIENT-0042" not in refused.output
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert (
        "no tokens; write one token from keymap.csv per line"
        in invoke(runner, "withdraw", *msd, "--tokens-file", empty, "--yes").output
    )
    others = tmp_path / "police.txt"
    others.write_text("\n".join(tokens_of(agencies["police"])[:2]) + "\n")
    foreign = invoke(runner, "withdraw", *msd, "--tokens-file", others, "--yes")
    assert foreign.exit_code == 1
    assert "2 of the 2 tokens sent are not records of the encodings party 'msd' uploaded last" in foreign.output
    again = invoke(runner, "withdraw", *msd, "--tokens-file", leaving, "--yes")
    assert again.exit_code == 1 and "3 of the 3 tokens sent are not records" in again.output, "withdrawn already"
    analyst = invoke(runner, "withdraw", "--server", SERVER, "--token-file", tokens / "analyst.token",
                     "--tokens-file", leaving, "--yes")  # fmt: skip
    assert analyst.exit_code == 1 and "403 (forbidden): only a party may withdraw records" in analyst.output

    admin = ("--server", SERVER, "--admin-secret-file", admin_file, "--project", project_id)
    by_party = invoke(runner, "project", "remove-party", "--server", SERVER, "--admin-secret-file",
                      tokens / "msd.token", "--project", project_id, "--party", "police", "--yes")  # fmt: skip
    assert by_party.exit_code == 1 and "403 (forbidden): only the administrator may remove a party" in by_party.output
    removed = invoke(runner, "project", "remove-party", *admin, "--party", "haven", "--yes")
    assert removed.exit_code == 0, removed.output
    assert "(party) of project" in removed.output and "removed party haven" in removed.output
    unknown = invoke(runner, "project", "remove-party", *admin, "--party", "nobody", "--yes")
    assert unknown.exit_code == 1 and "has no party 'nobody'; its parties are msd, police, haven" in unknown.output
    kept = invoke(runner, "project", "expire", *admin, "--yes")
    assert kept.exit_code == 1 and "declares no releases.safeguards.upload_retention_days" in kept.output
    unconfirmed = invoke(runner, "project", "delete", *admin)
    assert unconfirmed.exit_code == 1 and "Aborted" in unconfirmed.output
    deleted = invoke(runner, "project", "delete", *admin, "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted the project: encodings of 2 party(ies)" in deleted.output
    gone = invoke(runner, "project", "delete", *admin, "--yes")
    assert gone.exit_code == 1 and "was deleted by admin" in gone.output
