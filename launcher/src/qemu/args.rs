//! QEMU's command line for a launch, as a list of arguments (no shell). Pure: the same configuration gives
//! the same list, which the tests compare with QEMU's documented option syntax
//! (`docs/system/i386/amd-memory-encryption.rst` for `sev-snp-guest`, `docs/system/i386/tdx.rst` and
//! `qapi/qom.json` `TdxGuestProperties` for `tdx-guest`, `docs/system/invocation` for the rest).
//!
//! Every guest gets: no default devices, COM1 on a pipe to the launcher (the console), QMP on a Unix socket
//! (how the launcher learns whether the guest powered off or reset), `-no-reboot` (a reset ends the run),
//! virtio-blk disks, and with `--attest-forward` one virtio-net device on user-mode networking with
//! `restrict=on` whose only way out is the forwarded attestation address.

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::image::{GUEST_SERVICE_ADDR, GUEST_SERVICE_PORT};

/// The name of the simulated PSP's virtio-serial port (the agent looks for it).
pub const PSP_PORT_NAME: &str = "cvm-psp";

/// How QEMU runs guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation (any host; the only choice without hardware virtualization).
    Tcg,
    /// KVM (`/dev/kvm` with VMX or SVM underneath; SNP and TDX need it).
    Kvm,
}

impl Accel {
    /// `tcg` or `kvm`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// A virtio-blk disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// The image file (raw).
    pub path: PathBuf,
    /// Attach it read-only.
    pub read_only: bool,
}

/// The TEE of the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tee {
    /// No memory encryption; the launcher's simulated PSP on the virtio-serial port `cvm-psp`, connected to
    /// this Unix socket (where the launcher listens).
    Sim {
        /// The PSP socket.
        psp_socket: PathBuf,
    },
    /// AMD SEV-SNP (`sev-snp-guest`, QEMU ≥ 9.1), booted through OVMF with the kernel, initrd and command
    /// line hashed into the measured hashes page (`kernel-hashes=on`).
    Snp(SnpGuest),
    /// Intel TDX (`tdx-guest`, QEMU ≥ 10.1), booted through TDVF.
    Tdx(TdxGuest),
}

/// The `sev-snp-guest` object's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpGuest {
    /// OVMF built for SNP (`-bios`).
    pub firmware: PathBuf,
    /// QEMU's CPU model (it is measured into the VMSAs).
    pub cpu_type: String,
    /// The guest policy (SEV-SNP ABI §4.3).
    pub policy: u64,
    /// HOST_DATA, 32 bytes.
    pub host_data: [u8; 32],
    /// The ID block (96 bytes) and its authentication information (4096 bytes).
    pub id: Option<(Vec<u8>, Vec<u8>)>,
    /// The C-bit position in guest page tables (CPUID 0x8000001F EBX[5:0]; 51 on Milan, Genoa, Turin).
    pub cbitpos: u8,
    /// Physical address bits lost to memory encryption (CPUID 0x8000001F EBX[11:6]).
    pub reduced_phys_bits: u8,
}

/// The `tdx-guest` object's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxGuest {
    /// TDVF (`-bios`).
    pub firmware: PathBuf,
    /// MRCONFIGID, 48 bytes.
    pub mrconfigid: [u8; 48],
    /// MROWNER, 48 bytes.
    pub mrowner: [u8; 48],
    /// The host's Quote Generation Service (Intel DCAP's QGS) as a Unix socket, for the guest's GetQuote.
    pub quote_socket: Option<PathBuf>,
}

/// Everything the command line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuConfig {
    /// The accelerator.
    pub accel: Accel,
    /// Guest RAM, MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// The kernel (bzImage).
    pub kernel: PathBuf,
    /// The initrd.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub append: String,
    /// virtio-blk disks, in order (`/dev/vda`, `/dev/vdb`, …).
    pub disks: Vec<Disk>,
    /// Forward the guest's [`GUEST_SERVICE_ADDR`]:[`GUEST_SERVICE_PORT`] to `127.0.0.1:port` by running
    /// `relay` (program and arguments; the port is appended) for each connection.
    pub forward: Option<Forward>,
    /// The QMP socket QEMU listens on.
    pub qmp_socket: PathBuf,
    /// The TEE.
    pub tee: Tee,
}

/// The attestation service forwarded into the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The service's port on 127.0.0.1.
    pub host_port: u16,
    /// The program QEMU starts per guest connection, with its stdin/stdout on the connection, and its
    /// arguments before the target (`cvm-launch relay`).
    pub relay: Vec<String>,
}

/// `value` for a QEMU option list: commas doubled.
fn opt(value: &str) -> String {
    value.replace(',', ",,")
}

fn path_opt(p: &Path) -> String {
    opt(&p.display().to_string())
}

/// `word` quoted for GLib's `g_shell_parse_argv`, which splits a `guestfwd=…-cmd:` command.
fn shell_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The argument list (without the program name).
pub fn argv(cfg: &QemuConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    let mem = format!("{}M", cfg.memory_mib);
    let smp = cfg.vcpus.to_string();
    let machine = match &cfg.tee {
        Tee::Sim { .. } => "q35".to_owned(),
        Tee::Snp(_) => "q35,confidential-guest-support=sev0,memory-backend=ram0".to_owned(),
        Tee::Tdx(_) => "q35,kernel-irqchip=split,confidential-guest-support=tdx0".to_owned(),
    };
    push(&[
        "-accel",
        cfg.accel.name(),
        "-machine",
        &machine,
        "-m",
        &mem,
        "-smp",
        &smp,
    ]);
    let cpu = match (&cfg.tee, cfg.accel) {
        (Tee::Snp(s), _) => s.cpu_type.clone(),
        (_, Accel::Kvm) => "host".to_owned(),
        (_, Accel::Tcg) => "max".to_owned(),
    };
    push(&["-cpu", &cpu]);
    match &cfg.tee {
        Tee::Sim { psp_socket } => {
            let chardev = format!("socket,id=psp,path={}", path_opt(psp_socket));
            let port = format!("virtserialport,bus=vser0.0,chardev=psp,name={PSP_PORT_NAME}");
            push(&[
                "-device",
                "virtio-serial-pci,id=vser0",
                "-chardev",
                &chardev,
                "-device",
                &port,
            ]);
        }
        Tee::Snp(s) => {
            let backend =
                format!("memory-backend-memfd,id=ram0,size={mem},share=true,prealloc=false");
            let mut object = format!(
                "sev-snp-guest,id=sev0,cbitpos={},reduced-phys-bits={},policy={:#x},kernel-hashes=on,host-data={}",
                s.cbitpos,
                s.reduced_phys_bits,
                s.policy,
                b64(&s.host_data)
            );
            if let Some((block, auth)) = &s.id {
                object.push_str(&format!(",id-block={},id-auth={}", b64(block), b64(auth)));
            }
            let bios = path_opt(&s.firmware);
            push(&["-object", &backend, "-object", &object, "-bios", &bios]);
        }
        Tee::Tdx(t) => {
            let mut object = serde_json::json!({
                "qom-type": "tdx-guest",
                "id": "tdx0",
                "mrconfigid": b64(&t.mrconfigid),
                "mrowner": b64(&t.mrowner),
            });
            if let Some(q) = &t.quote_socket {
                object["quote-generation-socket"] =
                    serde_json::json!({"type": "unix", "path": q.display().to_string()});
            }
            let object = object.to_string();
            let bios = path_opt(&t.firmware);
            push(&["-object", &object, "-bios", &bios]);
        }
    }
    let kernel = path_opt(&cfg.kernel);
    push(&["-kernel", &kernel, "-append", &cfg.append]);
    if let Some(initrd) = &cfg.initrd {
        let initrd = path_opt(initrd);
        push(&["-initrd", &initrd]);
    }
    push(&[
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
    ]);
    let qmp = format!("unix:{},server=on,wait=off", path_opt(&cfg.qmp_socket));
    push(&["-qmp", &qmp]);
    for (i, d) in cfg.disks.iter().enumerate() {
        let drive = format!(
            "file={},format=raw,if=none,id=disk{i},readonly={}",
            path_opt(&d.path),
            if d.read_only { "on" } else { "off" }
        );
        let device = format!("virtio-blk-pci,drive=disk{i}");
        push(&["-drive", &drive, "-device", &device]);
    }
    if let Some(f) = &cfg.forward {
        let mut cmd: Vec<String> = f.relay.iter().map(|w| shell_word(w)).collect();
        cmd.push(shell_word(&format!("127.0.0.1:{}", f.host_port)));
        let netdev = format!(
            "user,id=net0,restrict=on,guestfwd=tcp:{GUEST_SERVICE_ADDR}:{GUEST_SERVICE_PORT}-cmd:{}",
            opt(&cmd.join(" "))
        );
        push(&[
            "-netdev",
            &netdev,
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
        ]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> QemuConfig {
        QemuConfig {
            accel: Accel::Tcg,
            memory_mib: 512,
            vcpus: 1,
            kernel: "/k/bzImage".into(),
            initrd: Some("/k/initrd,1.img".into()),
            append: "console=ttyS0 panic=-1".into(),
            disks: vec![
                Disk {
                    path: "/d/luks.img".into(),
                    read_only: false,
                },
                Disk {
                    path: "/d/in.img".into(),
                    read_only: true,
                },
            ],
            forward: Some(Forward {
                host_port: 8443,
                relay: vec!["/bin/cvm launch".into(), "relay".into()],
            }),
            qmp_socket: "/run/x/qmp.sock".into(),
            tee: Tee::Sim {
                psp_socket: "/run/x/psp.sock".into(),
            },
        }
    }

    /// The value following `flag` at its `n`-th occurrence.
    fn nth<'a>(a: &'a [String], flag: &str, n: usize) -> &'a str {
        a.iter()
            .enumerate()
            .filter(|(_, x)| *x == flag)
            .nth(n)
            .and_then(|(i, _)| a.get(i + 1))
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {flag} #{n} in {a:?}"))
    }

    #[test]
    fn a_sim_guest_gets_its_psp_port_disks_and_only_the_forwarded_service() {
        let a = argv(&sim());
        assert_eq!(
            &a[..5],
            [
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot"
            ]
        );
        assert_eq!(nth(&a, "-accel", 0), "tcg");
        assert_eq!(nth(&a, "-machine", 0), "q35");
        assert_eq!(nth(&a, "-cpu", 0), "max");
        assert_eq!(nth(&a, "-m", 0), "512M");
        assert_eq!(nth(&a, "-chardev", 0), "socket,id=psp,path=/run/x/psp.sock");
        assert_eq!(
            nth(&a, "-device", 1),
            "virtserialport,bus=vser0.0,chardev=psp,name=cvm-psp"
        );
        // A comma in a path is doubled (QEMU's option-list escape).
        assert_eq!(nth(&a, "-initrd", 0), "/k/initrd,,1.img");
        assert_eq!(nth(&a, "-append", 0), "console=ttyS0 panic=-1");
        assert_eq!(nth(&a, "-serial", 0), "chardev:console");
        assert_eq!(
            nth(&a, "-qmp", 0),
            "unix:/run/x/qmp.sock,server=on,wait=off"
        );
        assert_eq!(
            nth(&a, "-drive", 0),
            "file=/d/luks.img,format=raw,if=none,id=disk0,readonly=off"
        );
        assert_eq!(
            nth(&a, "-drive", 1),
            "file=/d/in.img,format=raw,if=none,id=disk1,readonly=on"
        );
        assert_eq!(nth(&a, "-device", 3), "virtio-blk-pci,drive=disk1");
        assert_eq!(
            nth(&a, "-netdev", 0),
            "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:443-cmd:'/bin/cvm launch' 'relay' '127.0.0.1:8443'"
        );
        assert_eq!(nth(&a, "-device", 4), "virtio-net-pci,netdev=net0,romfile=");
        assert!(!a.iter().any(|x| x.contains("sev") || x.contains("tdx")));
    }

    #[test]
    fn without_a_forward_the_guest_has_no_network_at_all() {
        let mut c = sim();
        c.forward = None;
        let a = argv(&c);
        assert!(!a.iter().any(|x| x == "-netdev" || x.contains("virtio-net")));
    }

    #[test]
    fn an_snp_guest_uses_the_documented_sev_snp_guest_object() {
        let mut c = sim();
        c.accel = Accel::Kvm;
        c.vcpus = 4;
        c.tee = Tee::Snp(SnpGuest {
            firmware: "/fw/OVMF.fd".into(),
            cpu_type: "EPYC-v4".into(),
            policy: 0x30000,
            host_data: [0xab; 32],
            id: Some((vec![1; 96], vec![2; 4096])),
            cbitpos: 51,
            reduced_phys_bits: 1,
        });
        let a = argv(&c);
        assert_eq!(
            nth(&a, "-machine", 0),
            "q35,confidential-guest-support=sev0,memory-backend=ram0"
        );
        assert_eq!(nth(&a, "-accel", 0), "kvm");
        assert_eq!(nth(&a, "-cpu", 0), "EPYC-v4");
        assert_eq!(nth(&a, "-smp", 0), "4");
        assert_eq!(
            nth(&a, "-object", 0),
            "memory-backend-memfd,id=ram0,size=512M,share=true,prealloc=false"
        );
        let object = nth(&a, "-object", 1);
        assert!(
            object.starts_with(
                "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,kernel-hashes=on,host-data="
            ),
            "{object}"
        );
        let host_data = object
            .split(',')
            .find_map(|kv| kv.strip_prefix("host-data="))
            .unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(host_data)
                .unwrap(),
            vec![0xab; 32]
        );
        let id_auth = object
            .split(',')
            .find_map(|kv| kv.strip_prefix("id-auth="))
            .unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(id_auth)
                .unwrap()
                .len(),
            4096
        );
        assert_eq!(nth(&a, "-bios", 0), "/fw/OVMF.fd");
        assert!(!a.iter().any(|x| x.contains("virtserialport")));
    }

    #[test]
    fn a_tdx_guest_uses_the_json_tdx_guest_object_with_its_qgs_socket() {
        let mut c = sim();
        c.accel = Accel::Kvm;
        c.tee = Tee::Tdx(TdxGuest {
            firmware: "/fw/TDVF.fd".into(),
            mrconfigid: [1; 48],
            mrowner: [0; 48],
            quote_socket: Some("/var/run/tdx-qgs/qgs.socket".into()),
        });
        let a = argv(&c);
        assert_eq!(
            nth(&a, "-machine", 0),
            "q35,kernel-irqchip=split,confidential-guest-support=tdx0"
        );
        assert_eq!(nth(&a, "-cpu", 0), "host");
        let object: serde_json::Value = serde_json::from_str(nth(&a, "-object", 0)).unwrap();
        assert_eq!(object["qom-type"], "tdx-guest");
        assert_eq!(object["id"], "tdx0");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(object["mrconfigid"].as_str().unwrap())
                .unwrap(),
            vec![1; 48]
        );
        assert_eq!(
            object["quote-generation-socket"],
            serde_json::json!({"type": "unix", "path": "/var/run/tdx-qgs/qgs.socket"})
        );
        assert_eq!(nth(&a, "-bios", 0), "/fw/TDVF.fd");
    }
}
