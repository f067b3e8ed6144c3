"""demo.tegrastats: GPU load and board power from tegrastats lines of several Jetson boards."""

from __future__ import annotations

import os
import time

import pytest

from demo.tegrastats import TegraStats, format_hud, parse_line

ORIN_NANO = ("12-02-2025 10:11:12 RAM 3179/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [11%@1510,4%@1510,"
             "2%@1510,3%@1510,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 37% cpu@48.5C soc2@47.312C soc0@47.5C gpu@48.093C "
             "tj@48.5C soc1@46.968C VDD_IN 6245mW/5970mW VDD_CPU_GPU_CV 1238mW/1100mW VDD_SOC 1652mW/1600mW")
AGX_ORIN = ("RAM 2448/30536MB (lfb 6546x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,0%@729,0%@729,0%@729] "
            "EMC_FREQ 0%@2133 GR3D_FREQ 45%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C CPU@46.625C Tboard@35C "
            "VDD_GPU_SOC 2791mW/2791mW VDD_CPU_CV 398mW/398mW VIN_SYS_5V0 3924mW/3924mW VDDQ_VDD2_1V8AO 503mW/503mW")
XAVIER_NX = ("RAM 2566/7765MB (lfb 868x4MB) SWAP 0/3883MB (cached 0MB) CPU [2%@1190,1%@1190] EMC_FREQ 0% "
             "GR3D_FREQ 0% AO@35.5C GPU@35C PMIC@100C AUX@35C CPU@36C thermal@35.75C VDD_IN 4585/4585 "
             "VDD_CPU_GPU_CV 612/612 VDD_SOC 1429/1429")
NANO = ("RAM 1628/3964MB (lfb 129x4MB) SWAP 0/1982MB (cached 0MB) CPU [9%@1479,3%@1479] EMC_FREQ 0% GR3D_FREQ 99% "
        "PLL@26C CPU@28.5C PMIC@100C GPU@27C AO@34C thermal@27.75C POM_5V_IN 2250/2250 POM_5V_GPU 0/0 POM_5V_CPU 361/361")


def test_parse_lines_of_several_boards():
    o = parse_line(ORIN_NANO)
    assert o["gpu_percent"] == 37 and o["power_mw"] == 6245 and o["power_source"] == "VDD_IN"
    assert "RAM" not in o["rails"] and "SWAP" not in o["rails"]
    a = parse_line(AGX_ORIN)
    assert a["gpu_percent"] == 45 and a["power_source"] == "sum of rails"
    assert a["power_mw"] == 2791 + 398 + 3924 + 503
    x = parse_line(XAVIER_NX)
    assert x["gpu_percent"] == 0 and x["power_mw"] == 4585 and x["power_source"] == "VDD_IN"
    n = parse_line(NANO)
    assert n["gpu_percent"] == 99 and n["power_mw"] == 2250 and n["power_source"] == "POM_5V_IN"
    assert format_hud(o) == "GPU 37%  board 6.25 W (VDD_IN)"
    assert format_hud(None) == "" and parse_line("nothing here")["power_mw"] is None


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as a stand-in for tegrastats")
def test_reader_runs_tegrastats_when_present(tmp_path, monkeypatch):
    fake = tmp_path / "tegrastats"
    fake.write_text(f"#!/bin/sh\nwhile true; do echo '{ORIN_NANO}'; sleep 0.05; done\n")
    fake.chmod(0o755)
    assert TegraStats.start_if_available(str(tmp_path / "absent")) is None
    ts = TegraStats.start_if_available(str(fake), interval_ms=50)
    assert ts is not None
    try:
        deadline = time.monotonic() + 5
        while ts.latest is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ts.hud() == "GPU 37%  board 6.25 W (VDD_IN)"
    finally:
        ts.stop()
    assert ts._proc is None
