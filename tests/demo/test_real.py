"""The real-photo demo's --per-class draw: at random with a fixed seed, not the first files by name."""

from demo.real import sample_per_class


def photo_folders(root, per_class=100):
    for name in ("mono_defective", "poly_functional"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):  # named as the ELPV cells are: module by module
            (root / name / f"module{i // 10:02d}_cell{i % 10}.png").write_bytes(b"png")


def kept(root) -> dict[str, list[str]]:
    return {p.name: sorted(f.name for f in p.iterdir()) for p in sorted(root.iterdir())}


def test_the_photos_kept_are_drawn_from_the_whole_class_the_same_way_every_time(tmp_path):
    photo_folders(tmp_path / "a")
    photo_folders(tmp_path / "b")
    assert sample_per_class(tmp_path / "a", 20) == {"mono_defective": 20, "poly_functional": 20}
    sample_per_class(tmp_path / "b", 20)
    first, again = kept(tmp_path / "a"), kept(tmp_path / "b")
    assert first == again  # the fixed seed: the same photos on every machine
    for names in first.values():
        assert names != [f"module{i // 10:02d}_cell{i % 10}.png" for i in range(20)]  # not the first 20 by name
        assert len({name[:8] for name in names}) >= 6  # from most of the 10 modules, not 2
    assert first["mono_defective"] != first["poly_functional"]  # each class its own draw


def test_a_class_smaller_than_the_cap_is_kept_whole(tmp_path):
    photo_folders(tmp_path, per_class=7)
    assert sample_per_class(tmp_path, 20) == {"mono_defective": 7, "poly_functional": 7}
