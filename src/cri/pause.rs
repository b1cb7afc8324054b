//! The pause (sandbox) image, made by skiff itself, offline, for the architecture it runs on.
//!
//! Every pod sandbox runs one process that holds the pod's namespaces open. Upstream ships it
//! as `registry.k8s.io/pause`; with no registry reachable, skiff builds the same behaviour
//! here: a tiny static ELF executable whose machine code is written out below, wrapped in a
//! deterministic OCI image archive (so its digest never changes between builds or boxes) and
//! imported by [`ensure`] when containerd lacks the image.
//!
//! The program, the same on every architecture: install handlers for SIGINT and SIGTERM that
//! call `exit_group(0)` (as PID 1 of a PID namespace, signals without a handler are ignored,
//! so the handlers are what makes it stoppable), set SIGCHLD to ignored with `SA_NOCLDWAIT`
//! (the kernel then reaps every child, also orphans reparented to it, so no zombie stays),
//! then sleep in a loop (`pause`; arm64 has no `pause` syscall and uses `ppoll` with no file
//! descriptors). The `sigaction` structures are built on the stack, and the only address the
//! code needs (its handler's) is PC-relative, so the code is position-independent and the
//! same bytes work at any load address.
//!
//! This module only builds bytes and imports them; it does not decide when sandboxes run.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::images::{ImportedImage, import_bytes, sha256};
use super::proto::{ImageSpec, ImageStatusRequest};
use super::{CriClient, CriError};

/// The name the pause image is imported under, and the `sandbox_image` in containerd's
/// configuration. Upstream's name, so that CRI tools and users recognise it, and so that a
/// box that can reach a registry would pull upstream's equivalent image should this one ever
/// be removed.
pub const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// How long [`ensure`] waits for the CRI plugin to see the image after importing it.
const CRI_SEES_IMAGE: Duration = Duration::from_secs(10);

/// The architectures skiff builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64 (`amd64`).
    X86_64,
    /// 64-bit ARM (`arm64`).
    Aarch64,
    /// 32-bit ARMv7, hard-float EABI (`arm`, variant `v7`).
    Armv7,
}

impl Arch {
    /// The architecture skiff was compiled for, if it has a pause program.
    pub const fn host() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else if cfg!(target_arch = "arm") {
            Some(Arch::Armv7)
        } else {
            None
        }
    }

    /// The OCI (Go) architecture name and variant.
    pub fn oci(self) -> (&'static str, Option<&'static str>) {
        match self {
            Arch::X86_64 => ("amd64", None),
            Arch::Aarch64 => ("arm64", None),
            Arch::Armv7 => ("arm", Some("v7")),
        }
    }

    /// ELF `e_machine`.
    fn machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
            Arch::Armv7 => 40,
        }
    }

    /// Whether the ELF file is 64-bit.
    fn is_64(self) -> bool {
        !matches!(self, Arch::Armv7)
    }

    /// Where the file is mapped: the usual address of static executables.
    fn base(self) -> u64 {
        match self {
            Arch::X86_64 | Arch::Aarch64 => 0x40_0000,
            Arch::Armv7 => 0x1_0000,
        }
    }

    /// ELF `e_flags`: EABI version 5 with the hard-float ABI on ARM, nothing elsewhere.
    fn flags(self) -> u32 {
        match self {
            Arch::Armv7 => 0x0500_0400,
            _ => 0,
        }
    }

    /// The machine code.
    fn code(self) -> Vec<u8> {
        match self {
            Arch::X86_64 => X86_64_CODE.to_vec(),
            Arch::Aarch64 => AARCH64_CODE.iter().flat_map(|w| w.to_le_bytes()).collect(),
            Arch::Armv7 => ARMV7_CODE.iter().flat_map(|w| w.to_le_bytes()).collect(),
        }
    }
}

/// x86-64. Syscalls: number in rax, arguments in rdi, rsi, rdx, r10; `syscall` clobbers only
/// rax, rcx and r11. The kernel's `struct sigaction` is {handler, flags, restorer, mask}, 8
/// bytes each. x86-64 refuses to deliver a signal to a handler without `SA_RESTORER`, so the
/// handler doubles as the (never used, since it exits) restorer.
#[rustfmt::skip]
const X86_64_CODE: [u8; 98] = [
    0x48, 0x8d, 0x05, 0x52, 0x00, 0x00, 0x00, //  0: lea rax, [rip+0x52]   ; rax = handler (89)
    0x6a, 0x00,                               //  7: push 0                ; sa_mask = {}
    0x50,                                     //  9: push rax              ; sa_restorer
    0x68, 0x00, 0x00, 0x00, 0x04,             // 10: push 0x04000000       ; sa_flags = SA_RESTORER
    0x50,                                     // 15: push rax              ; sa_handler
    0xb8, 0x0d, 0x00, 0x00, 0x00,             // 16: mov eax, 13           ; rt_sigaction
    0xbf, 0x0f, 0x00, 0x00, 0x00,             // 21: mov edi, 15           ;   SIGTERM
    0x48, 0x89, 0xe6,                         // 26: mov rsi, rsp          ;   act = the stack
    0x31, 0xd2,                               // 29: xor edx, edx          ;   oldact = NULL
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00,       // 31: mov r10d, 8           ;   sizeof(sigset_t)
    0x0f, 0x05,                               // 37: syscall
    0xb8, 0x0d, 0x00, 0x00, 0x00,             // 39: mov eax, 13           ; rt_sigaction
    0xbf, 0x02, 0x00, 0x00, 0x00,             // 44: mov edi, 2            ;   SIGINT, same act
    0x0f, 0x05,                               // 49: syscall
    0x48, 0xc7, 0x04, 0x24,                   // 51: mov qword [rsp], 1    ; sa_handler = SIG_IGN
    0x01, 0x00, 0x00, 0x00,
    0x48, 0xc7, 0x44, 0x24, 0x08,             // 59: mov qword [rsp+8], 2  ; sa_flags = SA_NOCLDWAIT
    0x02, 0x00, 0x00, 0x00,
    0xb8, 0x0d, 0x00, 0x00, 0x00,             // 68: mov eax, 13           ; rt_sigaction
    0xbf, 0x11, 0x00, 0x00, 0x00,             // 73: mov edi, 17           ;   SIGCHLD
    0x0f, 0x05,                               // 78: syscall
    0xb8, 0x22, 0x00, 0x00, 0x00,             // 80: mov eax, 34           ; pause
    0x0f, 0x05,                               // 85: syscall
    0xeb, 0xf7,                               // 87: jmp 80                ; forever
    0xb8, 0xe7, 0x00, 0x00, 0x00,             // 89: handler: mov eax, 231 ; exit_group
    0x31, 0xff,                               // 94: xor edi, edi          ;   status 0
    0x0f, 0x05,                               // 96: syscall
];

/// arm64. Syscalls: number in x8, arguments in x0-x5, `svc #0` changes only x0. The kernel's
/// `struct sigaction` is {handler, flags, restorer, mask}, 8 bytes each; without
/// `SA_RESTORER` the kernel returns through the vDSO, which the exiting handler never does.
#[rustfmt::skip]
const AARCH64_CODE: [u32; 28] = [
    0x1000_0329, //   0: adr  x9, 100            ; x9 = handler
    0xd100_83ff, //   4: sub  sp, sp, #32        ; room for struct sigaction
    0xa900_7fe9, //   8: stp  x9, xzr, [sp]      ; sa_handler, sa_flags = 0
    0xa901_7fff, //  12: stp  xzr, xzr, [sp, #16]; sa_restorer = 0, sa_mask = {}
    0xd280_01e0, //  16: mov  x0, #15            ; SIGTERM
    0x9100_03e1, //  20: mov  x1, sp             ; act
    0xd280_0002, //  24: mov  x2, #0             ; oldact = NULL
    0xd280_0103, //  28: mov  x3, #8             ; sizeof(sigset_t)
    0xd280_10c8, //  32: mov  x8, #134           ; rt_sigaction
    0xd400_0001, //  36: svc  #0
    0xd280_0040, //  40: mov  x0, #2             ; SIGINT, same act
    0xd400_0001, //  44: svc  #0
    0xd280_0029, //  48: mov  x9, #1             ; SIG_IGN
    0xd280_004a, //  52: mov  x10, #2            ; SA_NOCLDWAIT
    0xa900_2be9, //  56: stp  x9, x10, [sp]      ; sa_handler, sa_flags
    0xd280_0220, //  60: mov  x0, #17            ; SIGCHLD
    0xd400_0001, //  64: svc  #0                 ; rt_sigaction
    0xd280_0000, //  68: mov  x0, #0             ; fds = NULL
    0xd280_0001, //  72: mov  x1, #0             ; nfds = 0
    0xd280_0002, //  76: mov  x2, #0             ; timeout = NULL: forever
    0xd280_0003, //  80: mov  x3, #0             ; sigmask = NULL
    0xd280_0004, //  84: mov  x4, #0             ; sigsetsize
    0xd280_0928, //  88: mov  x8, #73            ; ppoll
    0xd400_0001, //  92: svc  #0
    0x17ff_fff9, //  96: b    68                 ; forever
    0xd280_0000, // 100: handler: mov x0, #0     ; status 0
    0xd280_0bc8, // 104: mov  x8, #94            ; exit_group
    0xd400_0001, // 108: svc  #0
];

/// ARMv7, ARM (not Thumb) state, EABI. Syscalls: number in r7, arguments in r0-r3, `svc #0`
/// changes only r0. The kernel's `struct sigaction` is {handler, flags, restorer, mask}: 4,
/// 4, 4 and 8 bytes. Reading pc gives the instruction's address plus 8.
#[rustfmt::skip]
const ARMV7_CODE: [u32; 28] = [
    0xe28f_405c, //   0: add  r4, pc, #92        ; r4 = handler (0 + 8 + 92)
    0xe24d_d018, //   4: sub  sp, sp, #24        ; room for struct sigaction
    0xe3a0_5000, //   8: mov  r5, #0
    0xe58d_4000, //  12: str  r4, [sp]           ; sa_handler
    0xe58d_5004, //  16: str  r5, [sp, #4]       ; sa_flags = 0
    0xe58d_5008, //  20: str  r5, [sp, #8]       ; sa_restorer = 0
    0xe58d_500c, //  24: str  r5, [sp, #12]      ; sa_mask = {}
    0xe58d_5010, //  28: str  r5, [sp, #16]
    0xe3a0_000f, //  32: mov  r0, #15            ; SIGTERM
    0xe1a0_100d, //  36: mov  r1, sp             ; act
    0xe3a0_2000, //  40: mov  r2, #0             ; oldact = NULL
    0xe3a0_3008, //  44: mov  r3, #8             ; sizeof(sigset_t)
    0xe3a0_70ae, //  48: mov  r7, #174           ; rt_sigaction
    0xef00_0000, //  52: svc  #0
    0xe3a0_0002, //  56: mov  r0, #2             ; SIGINT, same act
    0xef00_0000, //  60: svc  #0
    0xe3a0_4001, //  64: mov  r4, #1             ; SIG_IGN
    0xe3a0_5002, //  68: mov  r5, #2             ; SA_NOCLDWAIT
    0xe58d_4000, //  72: str  r4, [sp]           ; sa_handler
    0xe58d_5004, //  76: str  r5, [sp, #4]       ; sa_flags
    0xe3a0_0011, //  80: mov  r0, #17            ; SIGCHLD
    0xef00_0000, //  84: svc  #0                 ; rt_sigaction
    0xe3a0_701d, //  88: mov  r7, #29            ; pause
    0xef00_0000, //  92: svc  #0
    0xeaff_fffc, //  96: b    88                 ; forever
    0xe3a0_0000, // 100: handler: mov r0, #0     ; status 0
    0xe3a0_70f8, // 104: mov  r7, #248           ; exit_group
    0xef00_0000, // 108: svc  #0
];

/// `PT_LOAD`, `PT_GNU_STACK` and the segment permission bits.
const PT_LOAD: u32 = 1;
const PT_GNU_STACK: u32 = 0x6474_e551;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// The pause program for `arch` as a complete static ELF executable: the ELF header, two
/// program headers (one `PT_LOAD` mapping the whole file read and execute, and a
/// `PT_GNU_STACK` asking for a non-executable stack) and the code, which is the entry point.
pub fn executable(arch: Arch) -> Vec<u8> {
    let code = arch.code();
    let (ehsize, phentsize): (u16, u16) = if arch.is_64() { (64, 56) } else { (52, 32) };
    let headers = u64::from(ehsize) + 2 * u64::from(phentsize);
    let entry = arch.base() + headers;
    let size = headers + code.len() as u64;

    let mut out = Vec::with_capacity(size as usize);
    // e_ident: magic, class (1 = 32-bit, 2 = 64-bit), little-endian, version 1, System V ABI.
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', if arch.is_64() { 2 } else { 1 }, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    out.extend_from_slice(&arch.machine().to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // e_version
    let word = |out: &mut Vec<u8>, v: u64| {
        if arch.is_64() {
            out.extend_from_slice(&v.to_le_bytes())
        } else {
            out.extend_from_slice(&(v as u32).to_le_bytes())
        }
    };
    word(&mut out, entry); // e_entry
    word(&mut out, u64::from(ehsize)); // e_phoff: right after this header
    word(&mut out, 0); // e_shoff: no section headers
    out.extend_from_slice(&arch.flags().to_le_bytes());
    for half in [ehsize, phentsize, 2, 0, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        out.extend_from_slice(&half.to_le_bytes());
    }
    debug_assert_eq!(out.len(), usize::from(ehsize));

    let segments = [(PT_LOAD, PF_R | PF_X, size, 0x1000), (PT_GNU_STACK, PF_R | PF_W, 0, 16)];
    for (kind, flags, bytes, align) in segments {
        let vaddr = if kind == PT_LOAD { arch.base() } else { 0 };
        out.extend_from_slice(&kind.to_le_bytes());
        if arch.is_64() {
            // Elf64_Phdr: type, flags, offset, vaddr, paddr, filesz, memsz, align.
            out.extend_from_slice(&flags.to_le_bytes());
            for v in [0, vaddr, vaddr, bytes, bytes, align] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        } else {
            // Elf32_Phdr: type, offset, vaddr, paddr, filesz, memsz, flags, align.
            for v in [0, vaddr as u32, vaddr as u32, bytes as u32, bytes as u32, flags, align as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    debug_assert_eq!(out.len() as u64, headers);
    out.extend_from_slice(&code);
    out
}

/// An OCI image layout archive (uncompressed tar) holding the pause image for `arch`, named
/// [`IMAGE`]. Every byte is fixed (times, owners, JSON key order), so the digest of an
/// architecture's image is the same on every build and box.
pub fn image_archive(arch: Arch) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    append(&mut layer, "pause", 0o755, &executable(arch));
    let layer = layer.into_inner().unwrap_or_default();

    let (architecture, variant) = arch.oci();
    let mut platform = json!({"architecture": architecture, "os": "linux"});
    if let Some(variant) = variant {
        platform["variant"] = json!(variant);
    }
    let mut config = platform.clone();
    config["created"] = json!("1970-01-01T00:00:00Z");
    // As upstream's image: an unprivileged user, since the program needs no rights at all.
    config["config"] = json!({"User": "65535:65535", "Entrypoint": ["/pause"], "WorkingDir": "/"});
    config["rootfs"] = json!({"type": "layers", "diff_ids": [sha256(&layer)]});
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap_or_default();
    let tag = IMAGE.rsplit(':').next().unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "platform": platform,
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": tag},
        }],
    }))
    .unwrap_or_default();

    let mut archive = tar::Builder::new(Vec::new());
    append(&mut archive, "oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in [&config, &layer, &manifest] {
        let name = sha256(blob).replace(':', "/");
        append(&mut archive, &format!("blobs/{name}"), 0o644, blob);
    }
    append(&mut archive, "index.json", 0o644, &index);
    archive.into_inner().unwrap_or_default()
}

/// A regular file owned by root with time 0, so the tar's bytes depend only on the content.
fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, bytes: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    // Writing into a Vec cannot fail; the paths are short, fixed and valid.
    let _ = tar.append_data(&mut header, path, bytes);
}

/// Makes sure containerd has the pause image [`IMAGE`]: if the CRI image service does not know
/// it, imports the one built for this host's architecture and waits until the CRI plugin lists
/// it (it learns of new images a moment later). Returns what was imported, or nothing if the
/// image was already there (an image of that name that the user imported is kept).
pub async fn ensure(client: &CriClient) -> Result<Vec<ImportedImage>, CriError> {
    if present(client).await? {
        return Ok(Vec::new());
    }
    let label = Path::new("the built-in pause image");
    let arch = Arch::host().ok_or_else(|| CriError::Import {
        archive: label.to_path_buf(),
        reason: format!("skiff has no pause program for {}", std::env::consts::ARCH),
    })?;
    let imported = import_bytes(client, label, image_archive(arch)).await?;
    let deadline = Instant::now() + CRI_SEES_IMAGE;
    while !present(client).await? {
        if Instant::now() > deadline {
            return Err(CriError::Import {
                archive: label.to_path_buf(),
                reason: format!("imported, but CRI on {} does not list {IMAGE}", client.socket().display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(imported)
}

/// Whether the CRI image service knows [`IMAGE`].
async fn present(client: &CriClient) -> Result<bool, CriError> {
    let request = ImageStatusRequest {
        image: Some(ImageSpec { image: IMAGE.to_string(), ..Default::default() }),
        verbose: false,
    };
    match client.images().image_status(request).await {
        Ok(response) => Ok(response.into_inner().image.is_some()),
        Err(status) => Err(client.call_error("ImageStatus", status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};
    use std::time::Duration;

    const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Armv7];

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn elf_header_fits_the_host() {
        let arch = Arch::host().expect("a supported build architecture");
        let elf = executable(arch);
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf[5], 1, "little-endian");
        assert_eq!(u16_at(&elf, 16), 2, "ET_EXEC");
        let (class, machine) = match std::env::consts::ARCH {
            "x86_64" => (2, 62),
            "aarch64" => (2, 183),
            "arm" => (1, 40),
            other => panic!("no pause program for {other}"),
        };
        assert_eq!(elf[4], class);
        assert_eq!(u16_at(&elf, 18), machine);
        if class == 2 {
            let (entry, phoff) = (u64_at(&elf, 24), u64_at(&elf, 32));
            assert_eq!(phoff, 64);
            assert_eq!(u16_at(&elf, 56), 2, "e_phnum");
            // The first program header maps the whole file, and the entry point is the code.
            assert_eq!(u32_at(&elf, 64), PT_LOAD);
            assert_eq!(u32_at(&elf, 68), PF_R | PF_X);
            let (offset, vaddr, filesz) = (u64_at(&elf, 72), u64_at(&elf, 80), u64_at(&elf, 96));
            assert_eq!((offset, filesz, u64_at(&elf, 104)), (0, elf.len() as u64, filesz));
            assert_eq!(entry - vaddr, 64 + 2 * 56);
            assert_eq!(u32_at(&elf, 120), PT_GNU_STACK);
            assert_eq!(&elf[(entry - vaddr) as usize..], &arch.code()[..]);
        } else {
            let (entry, phoff) = (u32_at(&elf, 24), u32_at(&elf, 28));
            assert_eq!(phoff, 52);
            assert_eq!(u32_at(&elf, 52), PT_LOAD);
            let (vaddr, filesz) = (u32_at(&elf, 60), u32_at(&elf, 68));
            assert_eq!(filesz as usize, elf.len());
            assert_eq!(&elf[(entry - vaddr) as usize..], &arch.code()[..]);
        }
    }

    #[test]
    fn every_architecture_has_its_own_machine_and_class() {
        for arch in ALL {
            let elf = executable(arch);
            assert_eq!(u16_at(&elf, 18), arch.machine());
            assert_eq!(elf[4], if arch.is_64() { 2 } else { 1 });
            // ARM code is word-aligned at the entry point.
            assert_eq!(elf.len() % 4, if arch == Arch::X86_64 { 2 } else { 0 });
        }
    }

    /// The branch and address offsets in the hand-assembled code point where the comments say.
    #[test]
    fn code_offsets_reach_the_handler_and_the_loop() {
        // x86-64: lea's displacement is relative to the next instruction (7).
        assert_eq!(7 + X86_64_CODE[3] as usize, 89);
        assert_eq!(&X86_64_CODE[89..91], &[0xb8, 0xe7], "handler starts with mov eax, 231");
        assert_eq!(89 + (X86_64_CODE[88] as i8) as isize, 80, "jmp goes back to the pause");
        // arm64: adr's immediate (immhi at bit 5) is relative to itself; b's is in words.
        assert_eq!((AARCH64_CODE[0] >> 5 & 0x7ffff) * 4, 25 * 4);
        assert_eq!(AARCH64_CODE[25], 0xd280_0000);
        assert_eq!(24 + ((AARCH64_CODE[24] << 6) as i32 >> 6), 17);
        // ARMv7: pc reads 8 ahead; b's offset is in words from there.
        assert_eq!(8 + (ARMV7_CODE[0] & 0xff), 100);
        assert_eq!(ARMV7_CODE[25], 0xe3a0_0000);
        assert_eq!(24 + 2 + ((ARMV7_CODE[24] << 8) as i32 >> 8), 22);
    }

    #[test]
    fn image_archive_is_deterministic_and_names_the_architecture() {
        let x86 = image_archive(Arch::X86_64);
        assert_eq!(x86, image_archive(Arch::X86_64));
        assert_ne!(x86, image_archive(Arch::Aarch64));
        let mut archive = tar::Archive::new(&x86[..]);
        let mut files = std::collections::HashMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(entry.path().unwrap().to_string_lossy().into_owned(), bytes);
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["manifests"][0]["annotations"]["io.containerd.image.name"], IMAGE);
        let blob = |d: &serde_json::Value| files[&format!("blobs/{}", d.as_str().unwrap().replace(':', "/"))].clone();
        let manifest: serde_json::Value = serde_json::from_slice(&blob(&index["manifests"][0]["digest"])).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["Entrypoint"], json!(["/pause"]));
        let layer = blob(&manifest["layers"][0]["digest"]);
        let mut layer = tar::Archive::new(&layer[..]);
        let mut entry = layer.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("pause"));
        assert_eq!(entry.header().mode().unwrap(), 0o755);
        let mut elf = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut elf).unwrap();
        assert_eq!(elf, executable(Arch::X86_64));

        let arm: serde_json::Value = {
            let bytes = image_archive(Arch::Armv7);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let at = text.find(r#"{"architecture":"arm""#).expect("arm config");
            let end = at + text[at..].find('\0').unwrap();
            serde_json::from_str(&text[at..end]).unwrap()
        };
        assert_eq!(arm["variant"], "v7");
    }

    /// Writes `bytes` as an executable file in `dir`.
    fn write_executable(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Spawns, retrying while another test thread's fork still holds the file open for writing.
    fn spawn(command: &mut Command) -> Child {
        for _ in 0..50 {
            match command.spawn() {
                Ok(child) => return child,
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("spawn {command:?}: {e}"),
            }
        }
        panic!("spawn {command:?}: text file busy")
    }

    /// Starts the program, checks that it stays up, sends `signal` and expects exit status 0.
    fn runs_until(mut command: Command, signal: nix::sys::signal::Signal) {
        let mut child = spawn(&mut command);
        // Long enough for the handlers to be installed (under qemu too) and for an immediate
        // exit or crash to show.
        std::thread::sleep(Duration::from_millis(500));
        let early = child.try_wait().unwrap();
        if early.is_some() {
            panic!("{command:?} exited by itself: {early:?}");
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{command:?} ignored {signal}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0), "{command:?} after {signal}: {status}");
    }

    fn sigterm_and_sigint_end_it(arch: Arch, runner: Option<&str>) {
        use nix::sys::signal::Signal;
        let dir = tempfile::tempdir().unwrap();
        let program = write_executable(dir.path(), "pause", &executable(arch));
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            let command = match runner {
                Some(runner) => {
                    let mut c = Command::new(runner);
                    c.arg(&program);
                    c
                }
                None => Command::new(&program),
            };
            runs_until(command, signal);
        }
    }

    #[test]
    fn the_host_program_sleeps_until_sigterm_or_sigint_and_exits_0() {
        sigterm_and_sigint_end_it(Arch::host().expect("supported architecture"), None);
    }

    /// The children a process has now, from `/proc/PID/task/PID/children`.
    fn children(pid: u32) -> Vec<u32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `unshare` and the pause it runs as PID 1, both killed on drop so a failing test leaves
    /// neither (killing a namespace's PID 1 ends the namespace).
    struct Namespace {
        unshare: Child,
        pause: u32,
    }

    impl Drop for Namespace {
        fn drop(&mut self) {
            if self.pause != 0 {
                let pid = nix::unistd::Pid::from_raw(self.pause as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }

    /// As PID 1 of a new PID namespace, as in a pod with a shared process namespace: an orphan
    /// is reparented to it and reaped when it exits (no zombie), and SIGTERM still ends it
    /// with status 0. Needs root for the namespace; without it the test says so and passes.
    #[test]
    fn as_pid_1_it_reaps_orphans_and_exits_0_on_sigterm() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: creating a PID namespace needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let program = write_executable(dir.path(), "pause", &executable(Arch::host().unwrap()));
        let unshare = spawn(Command::new("unshare").args(["--pid", "--fork"]).arg(&program));
        let mut guard = Namespace { unshare, pause: 0 };
        wait_until("pause to start in its namespace", || {
            guard.pause = children(guard.unshare.id()).first().copied().unwrap_or(0);
            guard.pause != 0 && std::fs::read_link(format!("/proc/{}/exe", guard.pause)).is_ok_and(|e| e == program)
        });
        let pause = guard.pause;

        // A shell in the namespace starts a sleep and exits: the sleep is orphaned to pause.
        let status = Command::new("nsenter")
            .args(["--target", &pause.to_string(), "--pid", "--", "/bin/sh", "-c", "sleep 1 & exit 0"])
            .status()
            .unwrap();
        assert!(status.success(), "nsenter: {status}");
        wait_until("the orphan to be reparented to pause", || !children(pause).is_empty());
        let orphan = children(pause)[0];
        wait_until("pause to reap the orphan", || children(pause).is_empty());
        assert!(!Path::new(&format!("/proc/{orphan}")).exists(), "orphan {orphan} left as a zombie");

        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pause as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut status = None;
        wait_until("pause to exit after SIGTERM", || {
            status = guard.unshare.try_wait().unwrap();
            status.is_some()
        });
        guard.pause = 0;
        assert_eq!(status.and_then(|s| s.code()), Some(0), "unshare reports pause's exit");
    }

    /// The other architectures, where qemu-user-static is installed (Debian package
    /// `qemu-user-static`); without it the test says so and passes.
    #[test]
    fn the_other_architectures_run_under_qemu() {
        for (arch, qemu) in [
            (Arch::X86_64, "qemu-x86_64-static"),
            (Arch::Aarch64, "qemu-aarch64-static"),
            (Arch::Armv7, "qemu-arm-static"),
        ] {
            if Some(arch) == Arch::host() {
                continue;
            }
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(qemu).is_file()))
                .unwrap_or(false);
            if !found {
                eprintln!("SKIPPED: {qemu} is not installed (apt-get install qemu-user-static)");
                continue;
            }
            sigterm_and_sigint_end_it(arch, Some(qemu));
        }
    }
}
