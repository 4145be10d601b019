//! The guest's `/init`: a busybox shell script that mounts proc, sys and dev, loads the kernel modules,
//! brings up the network with a static address, mounts the plain disks, runs `cvm-agent run` (attest,
//! unlock, then the workload in its place) and powers the VM off when that ends, printing the exit status
//! on the console. Everything it says starts with `cvm-guest: `.
//!
//! The script holds no secret: the key exists only inside the agent and the programs it feeds on stdin.

use std::fmt::Write;

/// Where the agent's configuration is in the image.
pub const AGENT_CONFIG: &str = "/etc/cvm/agent.toml";
/// Where the agent is in the image.
pub const AGENT: &str = "/usr/bin/cvm-agent";
/// The prefix of every console line the init prints.
pub const PREFIX: &str = "cvm-guest: ";
/// The line the init prints before the agent starts (benchmarks time from it).
pub const AGENT_STARTS: &str = "cvm-guest: starting cvm-agent";
/// The start of the line that ends every run: `cvm-guest: exit status N`.
pub const EXIT_STATUS: &str = "cvm-guest: exit status ";

/// A guest network interface with a static address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The interface (`eth0`: the first virtio-net device, no udev renaming).
    pub interface: String,
    /// Address and prefix length, `10.0.2.15/24`.
    pub address: String,
    /// The default gateway.
    pub gateway: String,
}

/// A plain (unencrypted) filesystem mounted read-only before the agent runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The block device, `/dev/vdb`.
    pub device: String,
    /// The mount point.
    pub dir: String,
}

/// What the init does, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitPlan {
    /// Module files to `insmod`, in order, as paths inside the image.
    pub modules: Vec<String>,
    /// Module files loaded afterwards where they load (e.g. AES-NI on a CPU without it is refused).
    pub optional_modules: Vec<String>,
    /// The network, if any.
    pub network: Option<Network>,
    /// Block devices to wait for (the agent opens them, or they are mounted).
    pub wait_for: Vec<String>,
    /// Plain filesystems to mount.
    pub mounts: Vec<Mount>,
    /// The workload when there is no agent (a guest without attestation, e.g. a baseline); `None`: the
    /// agent runs with [`AGENT_CONFIG`], whose `command` is the workload.
    pub direct_command: Option<Vec<String>>,
}

/// How long the init waits for each block device, in tenths of a second.
const DEVICE_WAIT_TENTHS: u32 = 100;

/// The script.
pub fn script(plan: &InitPlan) -> String {
    let mut s = String::new();
    s.push_str(
        "#!/bin/sh\n\
         # /init of a cvm guest, written by `cvm-launch image`; measured with the rest of the initrd.\n\
         export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         fail() {\n\
         \techo \"cvm-guest: $*; powering off\"\n\
         \tsync\n\
         \tpoweroff -f\n\
         \twhile :; do sleep 60; done\n\
         }\n\
         mount -t proc proc /proc || fail \"cannot mount /proc\"\n\
         mount -t sysfs sysfs /sys || fail \"cannot mount /sys\"\n\
         mount -t devtmpfs devtmpfs /dev || fail \"cannot mount /dev\"\n\
         mkdir -p /run /tmp /mnt /dev/pts\n\
         mount -t tmpfs -o mode=0755 tmpfs /run\n\
         echo \"cvm-guest: $(cat /proc/version)\"\n",
    );
    for m in &plan.modules {
        let _ = writeln!(
            s,
            "insmod {} || fail \"cannot load kernel module {}\"",
            quote(m),
            quote(m)
        );
    }
    for m in &plan.optional_modules {
        let _ = writeln!(s, "insmod {} 2>/dev/null", quote(m));
    }
    if let Some(n) = &plan.network {
        let (i, a, g) = (quote(&n.interface), quote(&n.address), quote(&n.gateway));
        let _ = writeln!(
            s,
            "ip link set lo up\n\
             ip link set {i} up && ip addr add {a} dev {i} && ip route add default via {g} \\\n\
             \t|| fail \"cannot configure {i} with {a} via {g}\""
        );
    }
    for d in &plan.wait_for {
        let d = quote(d);
        let _ = writeln!(
            s,
            "i=0; while [ ! -b {d} ] && [ $i -lt {DEVICE_WAIT_TENTHS} ]; do sleep 0.1; i=$((i+1)); done\n\
             [ -b {d} ] || fail \"no block device {d}: attach the disk (cvm-launch run --disk FILE)\""
        );
    }
    for m in &plan.mounts {
        let (dev, dir) = (quote(&m.device), quote(&m.dir));
        let _ = writeln!(
            s,
            "mkdir -p {dir} && mount -o ro {dev} {dir} || fail \"cannot mount {dev} on {dir}\""
        );
    }
    match &plan.direct_command {
        None => {
            let _ = writeln!(
                s,
                "echo \"{AGENT_STARTS}\"\n{AGENT} run --config {AGENT_CONFIG}"
            );
        }
        Some(cmd) => {
            let words: Vec<String> = cmd.iter().map(|w| quote(w)).collect();
            let _ = writeln!(s, "{}", words.join(" "));
        }
    }
    let _ = writeln!(
        s,
        "status=$?\n\
         echo \"{EXIT_STATUS}$status\"\n\
         sync\n\
         poweroff -f\n\
         while :; do sleep 60; done"
    );
    s
}

/// `word` as one shell word: single-quoted, with `'` written as `'\''`.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_runs_the_agent_after_modules_network_and_mounts() {
        let s = script(&InitPlan {
            modules: vec!["/lib/modules/6.1/kernel/drivers/virtio/virtio.ko".into()],
            optional_modules: vec!["/lib/modules/6.1/kernel/arch/x86/crypto/aesni-intel.ko".into()],
            network: Some(Network {
                interface: "eth0".into(),
                address: "10.0.2.15/24".into(),
                gateway: "10.0.2.2".into(),
            }),
            wait_for: vec!["/dev/vda".into()],
            mounts: vec![Mount {
                device: "/dev/vdb".into(),
                dir: "/mnt/in".into(),
            }],
            direct_command: None,
        });
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} in\n{s}"));
        assert!(pos("mount -t proc") < pos("insmod '/lib/modules/6.1"));
        assert!(
            pos("virtio.ko' || fail")
                < pos(
                    "insmod '/lib/modules/6.1/kernel/arch/x86/crypto/aesni-intel.ko' 2>/dev/null\n"
                )
        );
        assert!(pos("aesni-intel") < pos("ip addr add '10.0.2.15/24'"));
        assert!(pos("ip addr") < pos("[ -b '/dev/vda' ]"));
        assert!(pos("-b '/dev/vda'") < pos("mount -o ro '/dev/vdb' '/mnt/in'"));
        assert!(pos("mount -o ro") < pos("/usr/bin/cvm-agent run --config /etc/cvm/agent.toml"));
        assert!(pos("cvm-agent run") < pos("echo \"cvm-guest: exit status $status\""));
        assert!(s.trim_end().ends_with("while :; do sleep 60; done"));
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        let s = script(&InitPlan {
            modules: vec![],
            optional_modules: vec![],
            network: None,
            wait_for: vec![],
            mounts: vec![],
            direct_command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $HOME; x'y".into(),
            ]),
        });
        assert!(s.contains(r#"'/bin/sh' '-c' 'echo $HOME; x'\''y'"#), "{s}");
        assert!(!s.contains("cvm-agent"));
    }
}
