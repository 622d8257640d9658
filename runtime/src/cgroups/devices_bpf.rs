//! The device allowlist (`linux.resources.devices`) on cgroup v2. v2 has no
//! `devices.*` files: like runc, crun and youki, minion attaches an eBPF program of
//! type `BPF_PROG_TYPE_CGROUP_DEVICE` to the container's cgroup. The kernel runs it
//! on every open and mknod of a device node and denies access when it returns 0.
//!
//! The program follows v1's semantics per access bit (m, r, w): for each bit the
//! request asks for, the last rule that matches the device and names that bit
//! decides; no matching rule denies. Removing the cgroup detaches the program.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::Error;

/// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR` (the low 16 bits of `access_type`).
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// `BPF_DEVCG_ACC_MKNOD` / `_READ` / `_WRITE` (the high 16 bits of `access_type`).
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// One parsed device rule, as in v1's `devices.allow` / `devices.deny` syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// `DEV_BLOCK`, `DEV_CHAR`, or None for `a` (all).
    pub typ: Option<i32>,
    /// None is the wildcard `*`.
    pub major: Option<i32>,
    pub minor: Option<i32>,
    /// `ACC_*` bits.
    pub access: i32,
}

impl DeviceRule {
    /// Parses `a`, or `c|b MAJ:MIN ACCESS` with `*` wildcards (e.g. `c 136:* rwm`).
    pub fn parse(allow: bool, rule: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::InvalidDeviceRule { rule: rule.to_string(), reason: why.to_string() };
        let mut it = rule.split_whitespace();
        let typ = match it.next() {
            Some("a") => None,
            Some("c") => Some(DEV_CHAR),
            Some("b") => Some(DEV_BLOCK),
            _ => return Err(bad("type must be a, b or c")),
        };
        let (mut major, mut minor, mut access) = (None, None, ACC_MKNOD | ACC_READ | ACC_WRITE);
        if let Some(nums) = it.next() {
            let (ma, mi) = nums.split_once(':').ok_or_else(|| bad("expected MAJOR:MINOR"))?;
            let num = |s: &str| -> Result<Option<i32>, Error> {
                if s == "*" {
                    return Ok(None);
                }
                s.parse::<u32>().ok().and_then(|v| i32::try_from(v).ok()).map(Some).ok_or_else(|| bad("bad device number"))
            };
            (major, minor) = (num(ma)?, num(mi)?);
        }
        if let Some(acc) = it.next() {
            access = 0;
            for ch in acc.chars() {
                access |= match ch {
                    'm' => ACC_MKNOD,
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    _ => return Err(bad("access must be made of r, w, m")),
                };
            }
        }
        if it.next().is_some() {
            return Err(bad("trailing text"));
        }
        Ok(Self { allow, typ, major, minor, access })
    }

    /// True when the rule matches every device (no comparison is emitted).
    fn unconditional(&self) -> bool {
        self.typ.is_none() || (self.major.is_none() && self.minor.is_none())
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JA: u8 = 0x05; // BPF_JMP | BPF_JA
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

/// Instructions with forward jumps to labels, resolved by `finish`.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<usize, usize>,
    fixups: Vec<(usize, usize)>,
    next_label: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.next_label += 1;
        self.next_label
    }
    fn bind(&mut self, l: usize) {
        self.labels.insert(l, self.insns.len());
    }
    fn op(&mut self, i: Insn) {
        self.insns.push(i);
    }
    fn jump(&mut self, code: u8, dst: u8, imm: i32, to: usize) {
        self.fixups.push((self.insns.len(), to));
        self.insns.push(insn(code, dst, 0, 0, imm));
    }
    fn ret(&mut self, v: i32) {
        self.op(insn(MOV64_K, 0, 0, 0, v));
        self.op(insn(EXIT, 0, 0, 0, 0));
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, l) in &self.fixups {
            let target = self.labels[l] as i64;
            // Jumps are relative to the next instruction; programs are tiny.
            self.insns[*at].off = (target - *at as i64 - 1) as i16;
        }
        self.insns
    }
}

/// Builds the program for `rules` (evaluated per access bit, last match wins,
/// default deny). Registers: r2 type, r3 access, r4 major, r5 minor, r1 scratch.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut a = Asm::default();
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; } in r1.
    a.op(insn(LDX_W, 2, 1, 0, 0));
    a.op(insn(AND32_K, 2, 0, 0, 0xffff));
    a.op(insn(LDX_W, 3, 1, 0, 0));
    a.op(insn(RSH32_K, 3, 0, 0, 16));
    a.op(insn(LDX_W, 4, 1, 4, 0));
    a.op(insn(LDX_W, 5, 1, 8, 0));
    for bit in [ACC_MKNOD, ACC_READ, ACC_WRITE] {
        let next_bit = a.label();
        a.op(insn(MOV32_X, 1, 3, 0, 0));
        a.op(insn(AND32_K, 1, 0, 0, bit));
        a.jump(JEQ_K, 1, 0, next_bit);
        let mut decided = false;
        for r in rules.iter().rev().filter(|r| r.access & bit != 0) {
            let next_rule = a.label();
            if !r.unconditional() {
                if let Some(t) = r.typ {
                    a.jump(JNE_K, 2, t, next_rule);
                }
                if let Some(m) = r.major {
                    a.jump(JNE_K, 4, m, next_rule);
                }
                if let Some(m) = r.minor {
                    a.jump(JNE_K, 5, m, next_rule);
                }
            } else if let Some(t) = r.typ {
                a.jump(JNE_K, 2, t, next_rule);
            }
            if r.allow {
                a.jump(JA, 0, 0, next_bit);
            } else {
                a.ret(0);
            }
            a.bind(next_rule);
            // A rule for every device of every type ends the search: anything
            // after it would be unreachable, which the verifier refuses.
            if r.typ.is_none() {
                decided = true;
                break;
            }
        }
        if !decided {
            a.ret(0);
        }
        a.bind(next_bit);
    }
    a.ret(1);
    a.finish()
}

/// Evaluates a program the way the kernel would (tests and debugging): only the
/// instructions `program` emits are understood.
pub fn eval(prog: &[Insn], typ: i32, access: i32, major: i32, minor: i32) -> Option<i32> {
    let mut r = [0i64; 11];
    let ctx = [((access as u32) << 16 | typ as u32) as i64, major as i64, minor as i64];
    let mut pc = 0usize;
    for _ in 0..10_000 {
        let i = prog.get(pc)?;
        let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
        pc += 1;
        let jump = |cond: bool, pc: &mut usize| {
            if cond {
                *pc = (*pc as i64 + i.off as i64) as usize;
            }
        };
        match i.code {
            LDX_W if src == 1 => r[dst] = ctx[(i.off / 4) as usize],
            AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as i64,
            RSH32_K => r[dst] = (r[dst] as u32 >> i.imm) as i64,
            MOV32_X => r[dst] = r[src] as u32 as i64,
            MOV64_K => r[dst] = i.imm as i64,
            JEQ_K => jump(r[dst] == i.imm as i64, &mut pc),
            JNE_K => jump(r[dst] != i.imm as i64, &mut pc),
            JA => jump(true, &mut pc),
            EXIT => return Some(r[0] as i32),
            _ => return None,
        }
    }
    None
}

// From linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a live, initialised repr(C) prefix of `union bpf_attr` and
    // its exact size is passed; the kernel reads (and for logs writes) only
    // memory the attr points to, which the caller keeps alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(rc) }
}

fn load(prog: &[Insn], log: Option<&mut Vec<u8>>) -> std::io::Result<OwnedFd> {
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    attr.prog_name[..13].copy_from_slice(b"minion_devcg\0");
    if let Some(buf) = log {
        attr.log_level = 1;
        attr.log_size = buf.len() as u32;
        attr.log_buf = buf.as_mut_ptr() as u64;
    }
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The most rules one program holds (each takes a few dozen instructions; jumps are
/// 16-bit offsets).
pub const MAX_RULES: usize = 512;

/// Loads the program for `rules` and attaches it to the cgroup directory `leaf`.
/// The attachment lives as long as the cgroup; the program fd is closed here.
pub fn attach(leaf: &Path, rules: &[DeviceRule]) -> Result<(), Error> {
    if rules.len() > MAX_RULES {
        // Jump offsets are 16 bits: a longer program could not be encoded.
        return Err(Error::InvalidDeviceRule {
            rule: format!("{} rules", rules.len()),
            reason: format!("at most {MAX_RULES} device rules fit in one cgroup device program"),
        });
    }
    let prog = program(rules);
    const _: () = assert!(std::mem::size_of::<Insn>() == 8);
    let fd = load(&prog, None).map_err(|e| {
        let mut log = vec![0u8; 1 << 16];
        let _ = load(&prog, Some(&mut log));
        let text = String::from_utf8_lossy(&log);
        let text = text.trim_end_matches('\0').trim();
        Error::DeviceProgram {
            op: "load",
            path: leaf.to_path_buf(),
            detail: if text.is_empty() { e.to_string() } else { format!("{e}: {text}") },
        }
    })?;
    let dir = std::fs::File::open(leaf).map_err(super::io("open cgroup", leaf))?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| Error::DeviceProgram { op: "attach", path: leaf.to_path_buf(), detail: e.to_string() })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(bool, &str)]) -> Vec<DeviceRule> {
        list.iter().map(|(a, r)| DeviceRule::parse(*a, r).unwrap()).collect()
    }

    const RW: i32 = ACC_READ | ACC_WRITE;

    #[test]
    fn the_largest_allowed_program_keeps_its_jumps_in_range() {
        let many: Vec<DeviceRule> =
            (0..MAX_RULES).map(|i| DeviceRule::parse(i % 2 == 0, &format!("c {}:{} rw", i / 256, i % 256)).unwrap()).collect();
        let p = program(&many);
        assert!(p.len() < i16::MAX as usize, "{} instructions", p.len());
        // The first rule's jump still lands inside the program.
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 0, 0), Some(1));
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 0, 1), Some(0));
        assert_eq!(eval(&p, DEV_BLOCK, ACC_READ, 0, 0), Some(0));
    }

    #[test]
    fn parses_rules() {
        assert_eq!(
            DeviceRule::parse(true, "c 136:* rw").unwrap(),
            DeviceRule { allow: true, typ: Some(DEV_CHAR), major: Some(136), minor: None, access: RW }
        );
        let a = DeviceRule::parse(false, "a").unwrap();
        assert_eq!((a.typ, a.major, a.minor, a.access), (None, None, None, 7));
        for bad in ["x 1:2 r", "c 1 r", "c 1:2 q", "c -1:2 r", "c 1:2 r extra", ""] {
            assert!(DeviceRule::parse(true, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deny_all_then_allows_last_match_wins() {
        let p = program(&rules(&[(false, "a"), (true, "c 1:3 rwm"), (true, "c 136:* rw"), (true, "b *:* m"), (false, "c 1:3 w")]));
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 1, 3), Some(1));
        assert_eq!(eval(&p, DEV_CHAR, ACC_MKNOD, 1, 3), Some(1));
        // The later deny of w wins for w, and a request for r+w needs both.
        assert_eq!(eval(&p, DEV_CHAR, ACC_WRITE, 1, 3), Some(0));
        assert_eq!(eval(&p, DEV_CHAR, RW, 1, 3), Some(0));
        assert_eq!(eval(&p, DEV_CHAR, RW, 136, 7), Some(1));
        assert_eq!(eval(&p, DEV_CHAR, ACC_MKNOD, 136, 7), Some(0));
        assert_eq!(eval(&p, DEV_BLOCK, ACC_MKNOD, 8, 0), Some(1));
        assert_eq!(eval(&p, DEV_BLOCK, ACC_READ, 8, 0), Some(0));
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 1, 11), Some(0));
        // Same major and minor, other type.
        assert_eq!(eval(&p, DEV_BLOCK, ACC_READ, 1, 3), Some(0));
    }

    #[test]
    fn no_rules_deny_and_allow_all_allows() {
        let p = program(&[]);
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 1, 3), Some(0));
        // A request without access bits (not sent by the kernel) is not denied.
        assert_eq!(eval(&p, DEV_CHAR, 0, 1, 3), Some(1));
        let p = program(&rules(&[(true, "a"), (false, "c 1:11 rwm")]));
        assert_eq!(eval(&p, DEV_CHAR, RW, 1, 3), Some(1));
        assert_eq!(eval(&p, DEV_CHAR, ACC_WRITE, 1, 11), Some(0));
        // A rule after an all-device allow overrides it; rules before are dead.
        let p = program(&rules(&[(true, "c 1:11 rwm"), (false, "a")]));
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 1, 11), Some(0));
    }

    #[test]
    fn emitted_program_shape() {
        // Deny-all alone: prologue (6), then per bit: test (3) + deny (2); allow (2).
        let p = program(&rules(&[(false, "a")]));
        assert_eq!(p.len(), 6 + 3 * 5 + 2);
        assert_eq!(p[0], insn(LDX_W, 2, 1, 0, 0));
        assert_eq!(p[5], insn(LDX_W, 5, 1, 8, 0));
        // The bit test jumps over the deny to the next bit.
        assert_eq!(p[8], insn(JEQ_K, 1, 0, 2, 0));
        assert_eq!(p[9], insn(MOV64_K, 0, 0, 0, 0));
        assert_eq!(*p.last().unwrap(), insn(EXIT, 0, 0, 0, 0));
        // Every jump lands inside the program, forward.
        let p = program(&rules(&[(false, "a"), (true, "c 1:3 rwm"), (true, "c *:* m"), (true, "c 136:* rwm")]));
        for (i, x) in p.iter().enumerate() {
            if [JEQ_K, JNE_K, JA].contains(&x.code) {
                assert!(x.off >= 0 && i + 1 + (x.off as usize) < p.len(), "insn {i}: {x:?}");
            }
        }
    }
}
