import pytest

from fastseg.data.splits import DataRoots, build_split, check_leakage
from fastseg.data.synthetic import make_id_sets
from fastseg.errors import FastsegError
from tests.conftest import SMALL


def ids(name, roots):
    return [s.id for s in build_split(name, roots)]


def test_split_counts_on_synthetic_tree(roots):
    # SMALL: 12 VOC train, 12 VOC val, 10 SBD-only ids. SBD train = 7 only + 6 VOC train + 4 VOC val,
    # SBD val = 3 only + 3 VOC train + 2 VOC val; VOC2011 val = the first 8 VOC val ids.
    assert len(ids("voc12-train", roots)) == 12
    assert len(ids("voc12-val", roots)) == 12
    assert len(ids("train-aug", roots)) == 10 + 12       # SBD-only + VOC train; VOC val removed
    assert len(ids("seg11valid", roots)) == 8 - 4        # VOC2011 val − SBD train
    a, b = ids("voc12-val-a", roots), ids("voc12-val-b", roots)
    assert (len(a), len(b)) == (6, 6)
    assert set(a) | set(b) == set(ids("voc12-val", roots)) and not set(a) & set(b)


def test_train_aug_set_algebra_and_mask_choice(roots):
    sets = make_id_sets(SMALL)
    expected = (set(sets.sbd_train) | set(sets.sbd_val) | set(sets.voc_train)) - set(sets.voc_val)
    samples = build_split("train-aug", roots)
    assert {s.id for s in samples} == expected
    for s in samples:  # the VOC annotation wins where both exist
        assert s.mask.suffix == (".png" if s.id in sets.voc_train else ".mat")


def test_val_halves_are_seeded(roots):
    # random.Random(VAL_HALF_SEED = 0) shuffle of the 12 val ids: the same halves for every user
    assert ids("voc12-val-a", roots) == ["2008_000013", "2008_000014", "2008_000017", "2008_000020",
                                         "2008_000021", "2008_000022"]
    assert ids("voc12-val-b", roots) == ["2008_000012", "2008_000015", "2008_000016", "2008_000018",
                                         "2008_000019", "2008_000023"]


def test_leakage_is_an_error(roots):
    train = build_split("train-aug", roots)
    report = check_leakage(train, build_split("seg11valid", roots), "train-aug", "seg11valid")
    assert report.summary() == "Leakage check: train-aug (22) vs seg11valid (4): no shared ids."
    sbd_train = [s for s in build_split("seg11valid", roots)]
    with pytest.raises(FastsegError, match=r"Leakage check: voc12-val \(12\) vs seg11valid \(4\): 4 SHARED ids"):
        check_leakage(build_split("voc12-val", roots), sbd_train, "voc12-val", "seg11valid")


def test_missing_dataset_folders(tmp_path, roots):
    with pytest.raises(FastsegError, match=f"VOC2012 folder {tmp_path} was not found"):
        build_split("voc12-train", DataRoots(tmp_path))
    with pytest.raises(FastsegError, match="Split train-aug needs SBD; pass --sbd DIR"):
        build_split("train-aug", DataRoots(roots.voc))
    with pytest.raises(FastsegError, match="Unknown split 'nope'"):
        build_split("nope", roots)
