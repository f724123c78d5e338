import pytest

from trainbench.config import Settings
from trainbench.devices import Gpu, Inventory
from trainbench.errors import ConfigError
from trainbench.planning import Case, expand, plan, resolve_device_set

CPU_ONLY = Inventory(gpus=(), cpu_model="test cpu", cpu_count=2)
THREE_GPUS = Inventory(
    gpus=(
        Gpu(0, "GPU-aaaa-0000", "00000000:01:00.0", "Titan X", 12288.0),
        Gpu(1, "GPU-bbbb-1111", "00000000:02:00.0", "Titan X", 12288.0),
        Gpu(2, "GPU-cccc-2222", "00000000:03:00.0", "GTX 980", 4096.0),
    ),
    cpu_model="test cpu",
    cpu_count=8,
    driver_version="352.63",
    cuda_driver_version="7.5",
)


def test_cpu_sets():
    assert resolve_device_set("cpu", CPU_ONLY).workers == 1
    ds = resolve_device_set("cpu:2", CPU_ONLY)
    assert (ds.kind, ds.workers, ds.gpu_uuids) == ("cpu", 2, ())


def test_gpu_sets_by_index_and_uuid_resolve_to_uuids():
    ds = resolve_device_set("0,2", THREE_GPUS)
    assert ds.gpu_uuids == ("GPU-aaaa-0000", "GPU-cccc-2222") and ds.gpu_names == ("Titan X", "GTX 980")
    assert resolve_device_set("GPU-bbbb-1111", THREE_GPUS).gpu_indices == (1,)


def test_missing_device_names_it_and_lists_those_that_exist():
    with pytest.raises(ConfigError) as err:
        resolve_device_set("0,3", THREE_GPUS)
    msg = str(err.value)
    assert "'3' does not exist" in msg and "0 (Titan X, GPU-aaaa-0000)" in msg and "2 (GTX 980" in msg
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_device_set("0", CPU_ONLY)


def test_same_gpu_twice_is_rejected():
    with pytest.raises(ConfigError, match="same GPU twice"):
        resolve_device_set("1,GPU-bbbb-1111", THREE_GPUS)


def test_all_is_every_combination_largest_first_like_the_log():
    texts = [d.text for d in expand(("all",), THREE_GPUS)]
    assert texts == ["0,1,2", "0,1", "0,2", "1,2", "0", "1", "2"]
    assert [d.text for d in expand(("all",), CPU_ONLY)] == ["cpu"]


def test_duplicate_sets_are_planned_once():
    assert [d.text for d in expand(("0", "all", "cpu", "cpu"), THREE_GPUS)][:2] == ["0", "0,1,2"]
    assert len(expand(("0", "all", "cpu", "cpu"), THREE_GPUS)) == 8


def test_repeats_are_interleaved():
    s = Settings(frameworks=("pytorch",), device_sets=("cpu", "cpu:2"), repeats=2)
    labels = [c.label for c in plan(s.frameworks, s.device_sets, s.repeats, CPU_ONLY)]
    assert labels == ["pytorch | cpu | r1", "pytorch | cpu:2 | r1", "pytorch | cpu | r2", "pytorch | cpu:2 | r2"]


def test_case_round_trips_through_a_dict_with_a_file_safe_key():
    case = plan(("pytorch",), ("0,1",), 1, THREE_GPUS)[0]
    again = Case.from_dict(case.to_dict())
    assert again == case and case.key == "gpu__pytorch__0-1__r1"


def test_a_matrix_airflow_cannot_map_is_refused_at_planning():
    eight = Inventory(
        gpus=tuple(Gpu(i, f"GPU-{i}", f"0000:{i:02x}:00.0", "H100", 81559.0) for i in range(8)),
        cpu_model="x",
        cpu_count=64,
    )
    with pytest.raises(ConfigError, match="3060 cases .* exceed the 1024"):
        plan(("pytorch", "mxnet", "jax", "neon"), ("all",), 3, eight)


def test_warm_ups_run_first_and_are_keyed_apart_from_the_measured_repeats():
    cases = plan(("pytorch", "jax"), ("cpu",), 2, CPU_ONLY, warmup=1)
    assert [c.label for c in cases] == [
        "pytorch | cpu | warm-up 1",
        "jax | cpu | warm-up 1",
        "pytorch | cpu | r1",
        "jax | cpu | r1",
        "pytorch | cpu | r2",
        "jax | cpu | r2",
    ]
    assert cases[0].key == "gpu__pytorch__cpu__w1" != cases[2].key and Case.from_dict(cases[0].to_dict()) == cases[0]
