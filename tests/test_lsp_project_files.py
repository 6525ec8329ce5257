"""The language server reads a mesh's other files from disk on every edit;
one whose stat has not changed keeps what was read (meshpolicy/lsp/meshes.py,
`build_project` with a DiskCache), and any change to it is read again."""

from __future__ import annotations

import os

from meshpolicy.lsp.meshes import ParseCache, analyse, build_project

A = "service a { port 80 http }\n"
B = "service b { port 80 http }\nallow a -> b\n"


def _mesh(tmp_path):
    (tmp_path / "meshc.toml").write_text("")
    (tmp_path / "a.mesh").write_text(A)
    (tmp_path / "b.mesh").write_text(B)
    return str(tmp_path.resolve())


def _files(root, disk):
    project, _ = build_project(root, {}, disk)
    return {os.path.basename(k): v for k, v in project.files.items()}


def test_an_unchanged_file_is_not_read_again(tmp_path):
    root, disk = _mesh(tmp_path), {}
    first = _files(root, disk)
    again = _files(root, disk)
    assert again["a.mesh"] is first["a.mesh"] and again["b.mesh"] is first["b.mesh"]
    assert _files(root, None)["a.mesh"] is not first["a.mesh"]  # without a cache: read each time


def test_a_rewritten_file_is_read_again_even_with_its_old_time_and_size(tmp_path):
    root, disk = _mesh(tmp_path), {}
    b = tmp_path / "b.mesh"
    before = os.stat(b)
    assert _files(root, disk)["b.mesh"].text == B
    same_size = B.replace("allow a", "deny  a")[:len(B)]
    assert len(same_size) == len(B)
    b.write_text(same_size)
    os.utime(b, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back; ctime cannot be
    assert _files(root, disk)["b.mesh"].text == same_size


def test_a_replaced_or_removed_file_is_read_again_or_gone(tmp_path):
    root, disk = _mesh(tmp_path), {}
    _files(root, disk)
    new = tmp_path / "new.tmp"
    new.write_text(B + "allow b -> a\n")
    os.replace(new, tmp_path / "b.mesh")  # an editor's atomic save: another inode
    assert _files(root, disk)["b.mesh"].text.endswith("allow b -> a\n")
    (tmp_path / "a.mesh").unlink()
    assert "a.mesh" not in _files(root, disk)


def test_the_analysis_uses_it_and_forgetting_the_mesh_drops_it(tmp_path):
    root, cache = _mesh(tmp_path), ParseCache()
    a1 = analyse(root, {}, 1, cache)
    a2 = analyse(root, {}, 2, cache)
    key = str(tmp_path.resolve() / "a.mesh")
    assert a2.sources[key] is a1.sources[key] and key in cache.disk
    cache.forget(a2.files)
    assert not cache.disk
