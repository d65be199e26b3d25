#!/usr/bin/env python3
"""Regenerate the SEV-SNP cross-check vectors of sojourn-measure.

Writes fw.bin (a 64 KiB synthetic OVMF-shaped firmware: deterministic filler, an OVMF
footer table with the SEV-ES reset block, SEV hashes table and SEV metadata entries, and an
ASEV metadata block with an SNP_KERNEL_HASHES section), kernel.bin, initrd.bin, then runs
the independent reference implementation `sev-snp-measure` (PyPI) on several
configurations and records its output in expected.json.

    python3 -m venv /tmp/snpvenv && /tmp/snpvenv/bin/pip install sev-snp-measure==0.0.13
    PATH=/tmp/snpvenv/bin:$PATH python3 gen.py

Debian 12's ovmf package ships no OVMF.amdsev.fd (OvmfPkg/AmdSev): its OVMF_CODE.fd has
SEV metadata but no SNP_KERNEL_HASHES section, so sev-snp-measure refuses direct boot with
it. That is why the direct-boot vectors use the synthetic firmware; the Debian firmware is
used for a firmware-only vector (checked only where that exact file is installed).
"""
import hashlib, json, os, struct, subprocess, uuid

HERE = os.path.dirname(os.path.abspath(__file__))


def stream(label, n):
    out, i = b"", 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}:{i}".encode()).digest()
        i += 1
    return out[:n]


def guid(s):
    return uuid.UUID(s).bytes_le


def firmware():
    size = 0x10000
    fw = bytearray(stream("sojourn-measure synthetic ovmf", size))
    items = [
        (0x800000, 0x8000, 1),     # SNP_SEC_MEM
        (0x808000, 0x1000, 0x10),  # SNP_KERNEL_HASHES
        (0x809000, 0x1000, 2),     # SNP_SECRETS
        (0x80A000, 0x1000, 3),     # CPUID
        (0x80B000, 0x4000, 1),     # SNP_SEC_MEM
    ]
    meta = b"ASEV" + struct.pack("<III", 16 + 12 * len(items), 1, len(items))
    meta += b"".join(struct.pack("<III", *it) for it in items)
    meta_off = 0x1000
    fw[size - meta_off:size - meta_off + len(meta)] = meta
    entries = [
        (struct.pack("<I", meta_off), "dc886566-984a-4798-a75e-5585a7bf67cc"),
        (struct.pack("<I", 0x0080B004), "00f771de-1a7e-4fcb-890e-68c77e2fb44e"),
        (struct.pack("<II", 0x808400, 0x400), "7255371f-3a3b-4b04-927b-1da6efa8d454"),
    ]
    table = b"".join(d + struct.pack("<H", len(d) + 18) + guid(g) for d, g in entries)
    footer = struct.pack("<H", len(table) + 18) + guid("96b582de-1fb2-45f7-baea-a366c55a082d")
    blob = table + footer
    end = size - 32
    fw[end - len(blob):end] = blob
    return bytes(fw)


CONFIGS = [
    dict(name="qemu-1vcpu-epyc-v4-kernel-initrd-cmdline", fw="fw.bin", vcpus=1, vcpu_type="EPYC-v4",
         vmm="QEMU", kernel=True, initrd=True, append="console=ttyS0 root=/dev/vda2 ro"),
    dict(name="qemu-4vcpu-milan-kernel-initrd-cmdline", fw="fw.bin", vcpus=4, vcpu_type="EPYC-Milan",
         vmm="QEMU", kernel=True, initrd=True, append="console=hvc0 sojourn.mode=snp"),
    dict(name="qemu-2vcpu-genoa-kernel-only", fw="fw.bin", vcpus=2, vcpu_type="EPYC-Genoa",
         vmm="QEMU", kernel=True, initrd=False, append=""),
    dict(name="gce-8vcpu-milan-firmware-only", fw="fw.bin", vcpus=8, vcpu_type="EPYC-Milan",
         vmm="gce", kernel=False, initrd=False, append=""),
    dict(name="ec2-3vcpu-sig-kernel-initrd", fw="fw.bin", vcpus=3, vcpu_sig=0xa10f11,
         vmm="ec2", kernel=True, initrd=True, append="quiet"),
    dict(name="qemu-2vcpu-milan-debian-ovmf", fw="/usr/share/OVMF/OVMF_CODE.fd", vcpus=2,
         vcpu_type="EPYC-Milan", vmm="QEMU", kernel=False, initrd=False, append=""),
]


def main():
    files = {
        "fw.bin": firmware(),
        "kernel.bin": stream("sojourn-measure synthetic kernel", 12345),
        "initrd.bin": stream("sojourn-measure synthetic initrd", 5000),
    }
    for name, data in files.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
    version = subprocess.run(["sev-snp-measure", "--version"], capture_output=True, text=True).stdout.strip()
    out = {"tool": version, "vectors": []}
    for c in CONFIGS:
        fw = c["fw"] if c["fw"].startswith("/") else os.path.join(HERE, c["fw"])
        if not os.path.exists(fw):
            print("skipping", c["name"], "(no", fw, ")")
            continue
        cmd = ["sev-snp-measure", "--mode", "snp", "--vcpus", str(c["vcpus"]), "--vmm-type", c["vmm"], "--ovmf", fw]
        if "vcpu_sig" in c:
            cmd += ["--vcpu-sig", hex(c["vcpu_sig"])]
        else:
            cmd += ["--vcpu-type", c["vcpu_type"]]
        if c["kernel"]:
            cmd += ["--kernel", os.path.join(HERE, "kernel.bin")]
            if c["initrd"]:
                cmd += ["--initrd", os.path.join(HERE, "initrd.bin")]
            cmd += ["--append", c["append"]]
        digest = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
        v = dict(c)
        v["firmware_sha256"] = hashlib.sha256(open(fw, "rb").read()).hexdigest()
        v["command"] = " ".join(a if a and " " not in a else repr(a) for a in cmd).replace(HERE + "/", "")
        v["expected"] = digest
        out["vectors"].append(v)
        print(c["name"], digest)
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
