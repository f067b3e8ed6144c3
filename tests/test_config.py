import pytest

from cpnet.config import ConfigError, load_config, named_configs, parse_overrides


def test_named_configs_follow_the_paper():
    names = set(named_configs())
    assert {"ade20k_r50", "ade20k_r101", "pascal_context_r101", "cityscapes_r101", "quickstart"} <= names
    ade = load_config("ade20k_r50")
    assert (ade.model.depth, ade.crop_size, ade.model.prior_size, ade.model.num_classes) == (50, (480, 480), (60, 60), 150)
    assert ade.train.lr == 0.02 and ade.train.weight_decay == 1e-4
    assert load_config("ade20k_r101").model.depth == 101
    pc = load_config("pascal_context_r101")
    assert (pc.crop_size, pc.model.prior_size, pc.model.num_classes) == ((512, 512), (64, 64), 59)
    cs = load_config("cityscapes_r101")
    assert (cs.crop_size, cs.model.prior_size, cs.model.num_classes, cs.loss.ohem) == ((768, 768), (96, 96), 19, True)
    assert cs.train.weight_decay == 5e-4
    for name in names:
        cfg = load_config(name)
        assert cfg.crop_size == tuple(8 * v for v in cfg.model.prior_size)
    # test scales and flip as the paper; random scale 0.5-2.0 + flip, aux 0.4, affinity 1, SGD 0.9, poly 0.9
    for name, scales in (("ade20k_r50", (0.5, 0.75, 1.0, 1.5, 1.75)), ("ade20k_r101", (0.5, 0.75, 1.0, 1.5, 1.75)),
                         ("pascal_context_r101", (0.5, 0.75, 1.0, 1.5, 1.75)), ("cityscapes_r101", (0.5, 0.75, 1.0, 1.5))):
        cfg = load_config(name)
        assert cfg.eval.scales == scales and cfg.eval.flip and cfg.eval.mode == "slide", name
        assert cfg.data.scale_range == (0.5, 2.0) and cfg.data.flip and cfg.data.base_scale == (), name
        assert (cfg.loss.aux_weight, cfg.loss.affinity_weight, cfg.train.momentum, cfg.train.poly_power) == \
            (0.4, 1.0, 0.9, 0.9)
    assert (cs.train.batch_size, ade.train.batch_size, pc.train.batch_size) == (8, 16, 16)


# (training frame, deployed frame) of each edge config: Cityscapes' 2:1 frames in training; deployed on the
# same frames, or on a 16:9 camera's
EDGE = {"edge_r18_256x512": ((1024, 2048), (1024, 2048)), "edge_r18_288x512": ((1024, 2048), (720, 1280))}


def _squares(h: int, w: int, side: int):
    import numpy as np

    label = np.zeros((h, w), np.uint8)
    for y in range(side, h - side, 3 * side):
        for x in range(side, w - side, 3 * side):
            label[y:y + side, x:x + side] = 1
    return label


def _median_runs(label, axis: int) -> float:
    """Median length of the runs of class 1 with class 0 on both ends (objects cut by a border don't count)."""
    import numpy as np

    lab = np.asarray(label)
    lines = lab if axis == 1 else lab.T
    lengths = []
    for line in lines:
        padded = np.concatenate([[255], line, [255]]).astype(np.int64)
        edges = np.flatnonzero(np.diff((padded == 1).astype(np.int8)))
        for a, b in zip(edges[::2], edges[1::2]):  # run = padded[a+1 : b+1]
            if padded[a] == 0 and padded[b + 1] == 0:
                lengths.append(b - a)
    return float(np.median(lengths)) if lengths else float("nan")


def _object_scale_ratios(cfg, train_frame, deploy_frame, transform=None):
    """(horizontal, vertical) ratios of the object size in training samples to that in the deployed input, for
    squares of 3% of the frame width."""
    import cv2
    import numpy as np

    from cpnet.data.transforms import build_transform

    (th, tw), (dh, dw) = train_frame, deploy_frame
    train_label = _squares(th, tw, round(0.03 * tw))
    deploy_label = _squares(dh, dw, round(0.03 * dw))
    if transform is None:
        cfg.data.photometric, cfg.data.cat_max_ratio = False, 1.0
        transform = build_transform(cfg.data, cfg.crop_size, train=True)
    image = np.zeros((th, tw, 3), np.uint8)
    per_sample = [[], []]
    for seed in range(40):
        _, y = transform(image, train_label, rng=np.random.default_rng(seed))
        for axis in (0, 1):
            per_sample[axis].append(_median_runs(y.numpy(), 1 - axis))
    h, w = cfg.crop_size
    deployed = cv2.resize(deploy_label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)  # as preprocess resizes
    return tuple(float(np.nanmedian(per_sample[axis])) / _median_runs(deployed, 1 - axis) for axis in (0, 1))


@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_configs_train_at_the_scale_they_deploy_at(name):
    """Objects appear at the same size in training samples and in the deployed input (median ratio within
    [0.67, 1.5], horizontally and vertically), and evaluation is the deployed preprocessing."""
    cfg = load_config(name)
    assert (cfg.eval.mode, cfg.eval.scales, cfg.eval.flip) == ("whole", (1.0,), False)
    h, w = cfg.crop_size
    assert abs(w / h - EDGE[name][1][1] / EDGE[name][1][0]) < 0.02  # the deployed frame keeps its aspect
    ratios = _object_scale_ratios(cfg, *EDGE[name])
    assert all(0.67 <= r <= 1.5 for r in ratios), ratios


def test_the_old_edge_setting_fails_the_scale_check():
    """The check sees the issue's problem: 256x256 crops of frames scaled 0.5-2.0 of their own size, deployed by
    squashing the whole frame to 256x256 (objects 4-16x larger in training)."""
    from cpnet.data.transforms import TrainTransform

    cfg = load_config("quickstart", ["model.prior_size=32"])
    old = TrainTransform((256, 256), scale_range=(0.5, 2.0), photometric=False, cat_max_ratio=1.0)
    ratios = _object_scale_ratios(cfg, (1024, 2048), (1024, 2048), transform=old)
    assert all(r > 1.5 for r in ratios), ratios


def test_overrides_parse_into_the_field_types():
    cfg = load_config("quickstart", ["train.lr=0.1", "model.aux=false", "data.scale_range=0.5,1.0",
                                     "eval.scales=[0.5, 1, 1.5]", "train.iters=7"])
    assert cfg.train.lr == 0.1 and cfg.model.aux is False
    assert cfg.data.scale_range == (0.5, 1.0) and cfg.eval.scales == (0.5, 1.0, 1.5)
    assert cfg.train.iters == 7 and isinstance(cfg.train.iters, int)
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


@pytest.mark.parametrize("override,needle", [
    ("train.lrr=1", "did you mean 'train.lr'"),
    ("train.iters=abc", "expected an integer"),
    ("model.head=psp", "model.head"),
    ("model.prior_size=0", "model.prior_size=0 is out of range: allowed 1 or more"),
    ("noequals", "key.sub=value"),
    ("model=3", "section"),
    # values the type allows but the meaning does not
    ("train.lr=nan", "train.lr"), ("train.lr=-0.1", "train.lr"), ("train.lr=inf", "train.lr"),
    ("train.momentum=-1", "train.momentum"), ("train.weight_decay=-1e-4", "train.weight_decay"),
    ("train.seed=-3", "train.seed"), ("data.num_workers=-1", "data.num_workers"),
    ("train.poly_power=-0.9", "train.poly_power"), ("train.log_interval=0", "train.log_interval"),
    ("train.val_interval=0", "train.val_interval"), ("train.ckpt_interval=-5", "train.ckpt_interval"),
    ("train.keep_ckpts=0", "train.keep_ckpts"), ("model.dropout=1.5", "model.dropout"),
    ("model.agg_kernel=4", "odd"), ("model.base_width=15", "even"), ("eval.scales=[0, 1]", "eval.scales"),
    ("eval.scales=[-1]", "eval.scales"), ("data.std=[0, 1, 1]", "data.std"), ("data.mean=[1, 2]", "3 values"),
    ("model.prior_size=1000000", "GiB"),
])
def test_bad_overrides_give_one_line(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config("quickstart", [override])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_yaml_file_and_dict(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("model: {depth: 18, prior_size: 4}\ntrain: {lr: 0.5}\n")
    cfg = load_config(p)
    assert cfg.name == "mine" and cfg.model.depth == 18 and cfg.train.lr == 0.5
    assert load_config({"model": {"depth": 34}}).model.depth == 34
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="named config"):
        load_config("ade20k_r5O")
    assert load_config(load_config("quickstart")).to_dict() == load_config("quickstart").to_dict()


def test_config_in_another_encoding_and_nested_aliases_are_one_short_line(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("model: {depth: 18}  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(latin)
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]"
              for i in range(1, 9)]
    lines += ["model: {num_classes: *a8}"]
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(bomb)
    assert len(str(e.value)) < 300 and "\n" not in str(e.value)


def test_prior_memory_estimate_refuses_with_the_figure():
    from cpnet.config import check_memory

    cfg = load_config("quickstart")
    check_memory(cfg, memory_bytes=64 * 2**30)  # fits
    with pytest.raises(ConfigError, match=r"batch_size=8 needs at least [0-9.]+ GiB .* than this machine's 0.0 GiB"):
        check_memory(cfg, memory_bytes=1)
    big = load_config("quickstart", ["model.prior_size=200"])  # 1.5 TiB of prior maps at batch 8
    check_memory(big, training=False, memory_bytes=24 * 2**30)  # but the model itself builds
    with pytest.raises(ConfigError, match="prior maps"):
        check_memory(big, memory_bytes=24 * 2**30)
