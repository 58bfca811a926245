"""Locating, verifying and downloading data files (moebench.datafiles) and `moebench data`."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moebench import datafiles
from moebench.cli import main
from moebench.datafiles import Archive, DataFile, DataSource
from moebench.errors import DataError, DataUnavailable

SHARED = Path(os.environ.get("MOEBENCH_DATA", "")) if os.environ.get("MOEBENCH_DATA") else None


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache, no network, and an empty MOEBENCH_DATA unless a test sets one."""
    monkeypatch.setenv("MOEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOEBENCH_OFFLINE", "1")
    monkeypatch.setenv("MOEBENCH_DATA", str(tmp_path / "data"))


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_source(tmp_path: Path, contents: dict[str, bytes], *, url_root: Path | None = None,
                debian: Path | None = None, bad: set[str] = frozenset()) -> DataSource:
    """A source whose files have the md5 of ``contents`` (or a wrong one for names in bad)."""
    files = tuple(
        DataFile(name, "0" * 32 if name in bad else md5(data),
                 url=(url_root / name).as_uri() if url_root else None)
        for name, data in contents.items()
    )
    return DataSource("toy", "toy", files, citation="toy data", license="CC0",
                      debian_dir=str(debian) if debian else None)


def write(root: Path, contents: dict[str, bytes]) -> Path:
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


CONTENTS = {"a.txt": b"1 2 3\n", "sub/b.txt": b"4 5 6\n"}


def test_search_order_data_env_cache_debian(tmp_path):
    debian = write(tmp_path / "debian", CONTENTS)
    source = make_source(tmp_path, CONTENTS, debian=debian)
    assert datafiles.locate(source) == (debian, "Debian package")
    cache = write(tmp_path / "cache" / "toy", CONTENTS)
    assert datafiles.locate(source) == (cache, "cache")
    env = write(tmp_path / "data" / "toy", CONTENTS)
    assert datafiles.locate(source) == (env, "$MOEBENCH_DATA")
    # a place with only some of the files is skipped
    (env / "sub" / "b.txt").unlink()
    assert datafiles.locate(source) == (cache, "cache")
    # only the files asked for must be present
    assert datafiles.locate(source, files=["a.txt"]) == (env, "$MOEBENCH_DATA")


def test_explicit_path_is_the_only_place_searched(tmp_path):
    write(tmp_path / "data" / "toy", CONTENTS)
    source = make_source(tmp_path, CONTENTS)
    mine = write(tmp_path / "mine", CONTENTS)
    assert datafiles.locate(source, mine) == (mine, "explicit path")
    assert datafiles.locate(source, mine / "a.txt")[0] == mine  # a path to one file works
    assert datafiles.locate(source, mine / "sub" / "b.txt")[0] == mine
    with pytest.raises(DataUnavailable) as err:
        datafiles.locate(source, tmp_path / "typo")
    msg = str(err.value)
    assert "explicit path: " + str(tmp_path / "typo") in msg and "put these files in" in msg
    assert "cache:" not in msg and "$MOEBENCH_DATA:" not in msg


def test_missing_files_error_lists_files_places_and_remedy(tmp_path):
    source = make_source(tmp_path, CONTENTS, debian=tmp_path / "deb")
    write(tmp_path / "cache" / "toy", {"a.txt": CONTENTS["a.txt"]})
    with pytest.raises(DataUnavailable) as err:
        datafiles.locate(source)
    msg = str(err.value)
    assert "1 of 2 data files not found: sub/b.txt" in msg
    for place in (tmp_path / "data" / "toy", tmp_path / "cache" / "toy", tmp_path / "deb"):
        assert str(place) in msg
    assert "moebench data fetch toy" in msg and "MOEBENCH_DATA" in msg
    assert "MOEBENCH_OFFLINE" in msg


def test_fetch_from_file_url_then_locate_finds_the_cache(tmp_path):
    server = write(tmp_path / "server", CONTENTS)
    source = make_source(tmp_path, CONTENTS, url_root=server)
    root = datafiles.fetch(source)
    assert root == tmp_path / "cache" / "toy"
    assert (root / "sub" / "b.txt").read_bytes() == CONTENTS["sub/b.txt"]
    assert datafiles.check_files(source, root) == {"a.txt": "ok", "sub/b.txt": "ok"}
    assert datafiles.locate(source) == (root, "cache")
    st = datafiles.status(source)
    assert st.complete and st.verified == "yes" and st.where == "cache"


def test_locate_downloads_when_online(tmp_path, monkeypatch):
    monkeypatch.delenv("MOEBENCH_OFFLINE")
    server = write(tmp_path / "server", CONTENTS)
    source = make_source(tmp_path, CONTENTS, url_root=server)
    root, where = datafiles.locate(source)
    assert where == "cache (downloaded)" and (root / "a.txt").is_file()


def test_fetch_refuses_a_checksum_mismatch_and_leaves_nothing(tmp_path):
    server = write(tmp_path / "server", CONTENTS)
    source = make_source(tmp_path, CONTENTS, url_root=server, bad={"sub/b.txt"})
    with pytest.raises(DataError, match="checksum mismatch"):
        datafiles.fetch(source)
    cache = tmp_path / "cache" / "toy"
    assert not (cache / "sub" / "b.txt").exists()
    assert not [p for p in cache.rglob("*") if p.name.endswith(".part")]


def test_unreachable_url_gives_data_unavailable(tmp_path, monkeypatch):
    monkeypatch.delenv("MOEBENCH_OFFLINE")
    source = make_source(tmp_path, CONTENTS, url_root=tmp_path / "nowhere")
    with pytest.raises(DataUnavailable) as err:
        datafiles.locate(source)
    assert "download failed" in str(err.value) and "a.txt" in str(err.value)


def test_fetch_extracts_an_archive(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in {**CONTENTS, "extra.bin": b"ignored"}.items():
            info = tarfile.TarInfo(f"toy-batches/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tarball = tmp_path / "toy.tar.gz"
    tarball.write_bytes(buf.getvalue())
    files = tuple(DataFile(n, md5(d)) for n, d in CONTENTS.items())
    archive = Archive(tarball.as_uri(), md5(buf.getvalue()), "toy.tar.gz", "toy-batches/")
    source = DataSource("toy", "toy", files, "c", "l", archive=archive)
    root = datafiles.fetch(source)
    assert datafiles.check_files(source, root) == {"a.txt": "ok", "sub/b.txt": "ok"}
    assert not (root / "extra.bin").exists()
    wrong = DataSource("toy2", "toy2", files, "c", "l",
                       archive=Archive(tarball.as_uri(), "0" * 32, "toy2.tar.gz", "toy-batches/"))
    with pytest.raises(DataError, match="checksum mismatch"):
        datafiles.fetch(wrong)
    assert not (tmp_path / "cache" / "toy2.tar.gz").exists()


def test_verify_exact_and_re_saved_files(tmp_path):
    root = write(tmp_path / "d", CONTENTS)
    good = make_source(tmp_path, CONTENTS)
    assert datafiles.verify(good, root) is True
    bad = make_source(tmp_path, CONTENTS, bad={"a.txt"})
    with pytest.raises(DataError, match="a.txt.*moebench data fetch toy"):
        datafiles.verify(bad, root)
    lenient = DataSource("toy", "toy", (DataFile("a.txt", "0" * 32, exact=False),), "c", "l")
    with pytest.warns(UserWarning, match="differ from the recorded copy"):
        assert datafiles.verify(lenient, root) is False


def test_md5_cache_notices_a_changed_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"one")
    assert datafiles.file_md5(path) == md5(b"one")
    path.write_bytes(b"three")
    assert datafiles.file_md5(path) == md5(b"three")


def test_manifest_verifies_files_without_embedded_checksum(tmp_path):
    root = write(tmp_path / "data" / "toy", CONTENTS)
    source = DataSource("toy", "toy", tuple(DataFile(n, None) for n in CONTENTS), "c", "l")
    assert set(datafiles.check_files(source, root).values()) == {"unknown"}
    lines = ["path\tsize_bytes\tmd5\tsha256"]
    lines += [f"toy/{n}\t{len(d)}\t{md5(d)}\t-" for n, d in CONTENTS.items()]
    (tmp_path / "data" / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    assert set(datafiles.check_files(source, root).values()) == {"ok"}


@pytest.mark.skipif(SHARED is None or not (SHARED / "fashion-mnist").is_dir(),
                    reason="needs ../shared/data (MOEBENCH_DATA)")
def test_debian_style_gzip_with_stripped_header_is_recognised(tmp_path):
    """Debian rewrites the gzip header; the decompressed content still identifies the file."""
    from moebench_plugins.datasets.fashion_mnist import SOURCE

    original = SHARED / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    payload = gzip.decompress(original.read_bytes())
    deb = tmp_path / "deb"
    deb.mkdir()
    with open(deb / "t10k-labels-idx1-ubyte.gz", "wb") as raw:  # no file name, mtime 0
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(payload)
    assert datafiles.file_md5(deb / "t10k-labels-idx1-ubyte.gz") != SOURCE.file(
        "t10k-labels-idx1-ubyte.gz").md5
    status = datafiles.check_files(SOURCE, deb, ["t10k-labels-idx1-ubyte.gz"])
    assert status == {"t10k-labels-idx1-ubyte.gz": "ok-content"}


def test_fixed_split_and_training_standardisation():
    train, test = datafiles.fixed_split(100, 0.1, 3)
    assert train.size == 90 and test.size == 10
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    again = datafiles.fixed_split(100, 0.1, 3)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, datafiles.fixed_split(100, 0.1, 4)[1])
    rng = np.random.default_rng(0)
    X, y = rng.normal(5, 3, (100, 2)), rng.normal(-2, 4, 100)
    X[:, 1] = 7.0  # constant column keeps scale 1
    s = datafiles.standardize(X[train], X[test], y[train], y[test])
    assert np.allclose(s.X_train[:, 0].mean(), 0) and np.allclose(s.X_train[:, 0].std(), 1)
    assert np.allclose(s.X_train[:, 1], 0) and s.x_scale[1] == 1.0
    assert np.allclose(s.y_test * s.y_scale + s.y_mean, y[test])
    assert s.y_mean == pytest.approx(y[train].mean())


# ----------------------------------------------------------------------------- the CLI


@pytest.mark.skipif(SHARED is None or not SHARED.is_dir(), reason="needs ../shared/data")
def test_cli_data_list(monkeypatch):
    monkeypatch.setenv("MOEBENCH_DATA", str(SHARED))
    result = CliRunner().invoke(main, ["data", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["source"]: r for r in json.loads(result.output)}
    for name in ("airfoil", "concrete", "stock-portfolio", "energy-efficiency", "yacht",
                 "uci-gal", "fashion-mnist"):
        assert rows[name]["present"] == rows[name]["total"], name
        assert rows[name]["where"] == "$MOEBENCH_DATA" and rows[name]["verified"] == "yes"
    assert rows["cifar10"]["present"] == 0 and rows["cifar10"]["verified"] == "-"
    table = CliRunner().invoke(main, ["data", "list", "--no-verify"])
    assert table.exit_code == 0 and "cifar10" in table.output


def test_cli_data_fetch(tmp_path, monkeypatch):
    from moebench_plugins.datasets import uci

    server = write(tmp_path / "server", {"yacht_hydrodynamics.data": b"1 2 3 4 5 6 7\n"})
    data = b"1 2 3 4 5 6 7\n"
    fake = DataSource("yacht", "yacht", (DataFile(
        "yacht_hydrodynamics.data", md5(data),
        url=(server / "yacht_hydrodynamics.data").as_uri()),), "c", "l")
    monkeypatch.setattr(uci.Yacht, "source", fake)
    result = CliRunner().invoke(main, ["data", "fetch", "yacht"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cache" / "yacht" / "yacht_hydrodynamics.data").read_bytes() == data
    assert "verified: yes" in result.output
    again = CliRunner().invoke(main, ["data", "fetch", "yacht"])
    assert "already present" in again.output
    unknown = CliRunner().invoke(main, ["data", "fetch", "no-such-data"])
    assert unknown.exit_code == 2 and "airfoil" in unknown.output
    broken = DataSource("yacht", "yacht", (DataFile(
        "yacht_hydrodynamics.data", md5(data), url=(tmp_path / "gone").as_uri()),), "c", "l")
    monkeypatch.setattr(uci.Yacht, "source", broken)
    failing = CliRunner().invoke(main, ["data", "fetch", "yacht", "--force"])
    assert failing.exit_code == 1 and "cannot download" in failing.output


# ------------------------------------------------------- downloads through pooch, checksums


@pytest.fixture
def http_server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving ``tmp_path / "www"`` (pooch's HTTP path)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def http_source(base: str, contents: dict[str, bytes], *, md5s: dict[str, str | None] | None = None
                ) -> DataSource:
    md5s = md5s if md5s is not None else {n: md5(d) for n, d in contents.items()}
    files = tuple(DataFile(n, md5s[n], url=f"{base}/{n}") for n in contents)
    return DataSource("toy", "toy", files, "c", "l")


def test_http_download_through_pooch_verifies_and_discards_mismatches(tmp_path, http_server):
    www, base = http_server
    write(www, CONTENTS)
    root = datafiles.fetch(http_source(base, CONTENTS))
    assert datafiles.check_files(http_source(base, CONTENTS), root) == {"a.txt": "ok",
                                                                       "sub/b.txt": "ok"}
    # the server now serves other bytes: a forced download is refused and leaves nothing
    (www / "a.txt").write_bytes(b"tampered\n")
    with pytest.raises(DataError, match=f"checksum mismatch for {base}/a.txt"):
        datafiles.fetch(http_source(base, CONTENTS), force=True)
    assert not (root / "a.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["sub"]  # no temporary files either
    missing = http_source(base, {"absent.txt": b"x"})
    with pytest.raises(DataUnavailable, match=f"cannot download {base}/absent.txt"):
        datafiles.fetch(missing)


def test_a_corrupt_cached_copy_is_downloaded_again(tmp_path, http_server):
    www, base = http_server
    write(www, CONTENTS)
    source = http_source(base, CONTENTS)
    root = datafiles.fetch(source)
    (root / "a.txt").write_bytes(b"bit rot\n")
    assert datafiles.check_files(source, root)["a.txt"] == "mismatch"
    datafiles.fetch(source)
    assert (root / "a.txt").read_bytes() == CONTENTS["a.txt"]


@pytest.mark.parametrize("scheme", ["file", "http"])
def test_a_download_without_a_known_checksum_is_refused(tmp_path, monkeypatch, http_server,
                                                        scheme):
    www, base = http_server
    write(www, CONTENTS)
    if scheme == "file":
        base = www.as_uri()
    source = http_source(base, CONTENTS, md5s={"a.txt": md5(CONTENTS["a.txt"]), "sub/b.txt": None})
    with pytest.raises(DataError) as err:
        datafiles.fetch(source)
    msg = str(err.value)
    assert "no published checksum is known for sub/b.txt" in msg
    assert "MOEBENCH_ALLOW_UNVERIFIED=1" in msg
    assert not (tmp_path / "cache" / "toy").exists()  # refused before downloading anything
    monkeypatch.delenv("MOEBENCH_OFFLINE")
    with pytest.raises(DataError, match="no published checksum"):  # locate does not hide it
        datafiles.locate(source)
    # the explicit opt-in downloads it, and only then is the cached copy used
    monkeypatch.setenv("MOEBENCH_ALLOW_UNVERIFIED", "1")
    root, where = datafiles.locate(source)
    assert where == "cache (downloaded)" and (root / "sub" / "b.txt").read_bytes() == CONTENTS[
        "sub/b.txt"]
    monkeypatch.delenv("MOEBENCH_ALLOW_UNVERIFIED")
    with pytest.raises(DataError, match="does not use the downloaded copies of files it cannot"):
        datafiles.locate(source)
    # a copy the user provides in MOEBENCH_DATA is the user's: it is read (status "unknown")
    env = write(tmp_path / "data" / "toy", CONTENTS)
    assert datafiles.locate(source) == (env, "$MOEBENCH_DATA")
    assert datafiles.check_files(source, env)["sub/b.txt"] == "unknown"


def test_archive_members_are_covered_by_the_archive_checksum(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in CONTENTS.items():
            info = tarfile.TarInfo(f"p/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    good = buf.getvalue()
    (tmp_path / "good.tar.gz").write_bytes(good)
    files = tuple(DataFile(n, None) for n in CONTENTS)  # members without their own md5
    source = DataSource("toy", "toy", files, "c", "l", archive=Archive(
        (tmp_path / "good.tar.gz").as_uri(), md5(good), "good.tar.gz", "p/"))
    root = datafiles.fetch(source)
    assert (root / "a.txt").read_bytes() == CONTENTS["a.txt"]
    assert datafiles.locate(source) == (root, "cache")


@pytest.mark.parametrize("how", ["truncated", "bit-flip"])
def test_a_tarball_that_does_not_decompress_is_a_data_error(tmp_path, how):
    """Even with a matching (wrongly published) md5, extraction errors are DataErrors."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        payload = os.urandom(200_000)
        info = tarfile.TarInfo("p/a.txt")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    data = bytearray(buf.getvalue())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.tar.gz").write_bytes(bytes(data))
    source = DataSource("toy", "toy", (DataFile("a.txt", md5(payload)),), "c", "l",
                        archive=Archive((tmp_path / "bad.tar.gz").as_uri(), md5(bytes(data)),
                                        "bad.tar.gz", "p/"))
    with pytest.raises(DataError) as err:
        datafiles.fetch(source)
    assert "moebench data fetch toy --force" in str(err.value)
    assert not (tmp_path / "cache" / "toy" / "a.txt").exists()


def test_check_files_reports_a_corrupt_gz_as_mismatch_not_an_exception(tmp_path):
    payload = b"IDX" * 1000
    data = gzip.compress(payload)
    root = tmp_path / "d"
    root.mkdir()
    source = DataSource("toy", "toy", (DataFile("x.gz", md5(data), content_md5=md5(payload)),),
                        "c", "l")
    for bad in (data[: len(data) // 2], data[:5], b"", data[:-4] + b"\0\0\0\0"):
        (root / "x.gz").write_bytes(bad)
        os.utime(root / "x.gz", ns=(1, len(bad)))  # a new mtime: not the cached md5
        assert datafiles.check_files(source, root) == {"x.gz": "mismatch"}
        with pytest.raises(DataError, match=r"checksum mismatch for .*x\.gz.*"
                                            r"run `moebench data fetch toy --force`"):
            datafiles.verify(source, root)
