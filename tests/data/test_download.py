import hashlib
import http.server
import io
import tarfile
import threading

import pytest

from fastseg.data.download import Archive, download_dataset
from fastseg.errors import FastsegError


def make_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in [("benchmark_RELEASE/dataset/train.txt", "2008_000001\n" * 2000),
                           ("benchmark_RELEASE/dataset/val.txt", "2008_000002\n")]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Server:
    """Serves one payload on 127.0.0.1 with Range support; can cut the first transfer short."""

    def __init__(self, payload: bytes):
        self.payload, self.truncate_once, self.ranges = payload, False, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    server.ranges.append(start)
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.truncate_once:
                    server.truncate_once = False
                    body = body[: len(body) // 2]
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/benchmark.tgz"


@pytest.fixture
def served():
    payload = make_archive()
    server = Server(payload)
    yield server, payload
    server.httpd.shutdown()


def archive_for(url, payload, md5=None):
    return Archive("benchmark.tgz", url, md5 or hashlib.md5(payload).hexdigest(), "benchmark_RELEASE/dataset/train.txt")


def test_download_verify_extract_and_rerun(tmp_path, served):
    server, payload = served
    archive = archive_for(server.url, payload)
    marker = download_dataset("sbd", tmp_path, archive)
    assert marker.read_text().count("2008_000001") == 2000
    server.httpd.shutdown()  # a re-run needs no network
    assert download_dataset("sbd", tmp_path, archive) == marker


def test_resume_after_truncated_transfer(tmp_path, served):
    server, payload = served
    server.truncate_once = True
    archive = archive_for(server.url, payload)
    with pytest.raises(FastsegError, match="run the command again to resume"):
        download_dataset("sbd", tmp_path, archive)
    part = tmp_path / "benchmark.tgz.part"
    assert 0 < part.stat().st_size < len(payload)
    download_dataset("sbd", tmp_path, archive)
    assert server.ranges == [len(payload) // 2]
    assert (tmp_path / "benchmark.tgz").read_bytes() == payload


def test_bad_checksum_is_refused_and_kept_aside(tmp_path, served):
    server, payload = served
    archive = archive_for(server.url, payload, md5="0" * 32)
    moved = r"has md5 [0-9a-f]{32}, expected 0{32}; it was moved to .*benchmark.tgz.bad"
    with pytest.raises(FastsegError, match=moved):
        download_dataset("sbd", tmp_path, archive)
    assert (tmp_path / "benchmark.tgz.bad").read_bytes() == payload
    assert not (tmp_path / "benchmark_RELEASE").exists()


def test_unreachable_host(tmp_path):
    archive = Archive("benchmark.tgz", "http://127.0.0.1:9/benchmark.tgz", "0" * 32, "x")
    with pytest.raises(FastsegError) as err:
        download_dataset("sbd", tmp_path, archive)
    assert str(err.value).startswith("Downloading http://127.0.0.1:9/benchmark.tgz failed (")
    assert f"place it at {tmp_path / 'benchmark.tgz'}." in str(err.value)


def test_hand_placed_archive_with_the_wrong_md5_names_both_checksums(tmp_path):
    (tmp_path / "benchmark.tgz").write_bytes(b"not the archive")
    archive = Archive("benchmark.tgz", "http://127.0.0.1:9/benchmark.tgz", "0" * 32, "x")
    with pytest.raises(FastsegError) as err:
        download_dataset("sbd", tmp_path, archive)
    actual = hashlib.md5(b"not the archive").hexdigest()
    assert str(err.value).startswith(f"Archive benchmark.tgz has md5 {actual}, expected {'0' * 32}; it was moved")


def test_root_that_is_a_file_is_one_sentence(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(FastsegError, match=r"^--root .*f is a file, not a folder; pass a folder to download into\.$"):
        download_dataset("sbd", tmp_path / "f")
