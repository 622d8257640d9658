//! Privileged tests of `process.terminal` with `--console-socket`: a receiver
//! like containerd's (or runc's `recvtty`) gets the pty master over the socket
//! with SCM_RIGHTS, types a command and reads its output.
#![allow(unsafe_code)]

mod common;

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::bundle::Bx;
use common::require_root;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::json;

/// Accepts one connection and receives (name, fd) as runc's `recvtty` does.
fn receive_fd(l: UnixListener) -> (String, OwnedFd) {
    let (conn, _) = l.accept().unwrap();
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            fd = fds.first().copied();
        }
    }
    let n = msg.bytes;
    // SAFETY: the fd arrived with SCM_RIGHTS and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd.expect("no fd in the message")) };
    (String::from_utf8_lossy(&name[..n]).into_owned(), fd)
}

#[test]
fn console_socket_receives_a_working_pty_master() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    let sock = f.path("console.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let receiver = std::thread::spawn(move || receive_fd(l));
    let b = f.bundle(&["sh"], |cfg| {
        cfg["process"]["terminal"] = json!(true);
        cfg["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    });
    f.rt_ok(&["create", "--bundle", b.to_str().unwrap(), "--console-socket", sock.to_str().unwrap(), &f.id]);
    let (name, master) = receiver.join().unwrap();
    assert_eq!(name, "/dev/ptmx");
    f.rt_ok(&["start", &f.id]);
    let mut m = File::from(master);
    let mut reader = m.try_clone().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        // Ends with EIO once the last slave fd is closed.
        while let Ok(n) = reader.read(&mut b) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&b[..n]);
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    m.write_all(b"echo hi-$((40+2)); tty; stty size; exit 7\n").unwrap();
    let st = f.wait_stopped();
    assert_eq!(st["exitCode"], 7, "{st}");
    std::thread::sleep(Duration::from_millis(50));
    drop(m);
    let out = out.join().unwrap();
    assert!(out.contains("hi-42"), "{out}");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("30 100"), "{out}");
}

#[test]
fn terminal_and_console_socket_go_together() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    let b = f.bundle(&["true"], |cfg| cfg["process"]["terminal"] = json!(true));
    let out = f.rt(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --console-socket"), "{out:?}");
    let b = f.bundle(&["true"], |_| {});
    let sock = f.path("c.sock");
    let _l = UnixListener::bind(&sock).unwrap();
    let out = f.rt(&["create", "--bundle", b.to_str().unwrap(), "--console-socket", sock.to_str().unwrap(), &f.id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("process.terminal is false"), "{out:?}");
}

#[test]
fn exec_tty_sends_its_own_pty() {
    if !require_root() {
        return;
    }
    let f = Bx::new();
    let b = f.bundle(&["sleep", "100"], |_| {});
    f.rt_ok(&["create", "--bundle", b.to_str().unwrap(), &f.id]);
    f.rt_ok(&["start", &f.id]);
    let sock = f.path("exec.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let reader = std::thread::spawn(move || {
        let (_, master) = receive_fd(l);
        let mut m = File::from(master);
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        while let Ok(n) = m.read(&mut b) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&b[..n]);
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    let out = f.rt(&["exec", "-t", "--console-socket", sock.to_str().unwrap(), &f.id, "--", "sh", "-c", "tty; echo ex-$((2+3))"]);
    assert!(out.status.success(), "{out:?}");
    let text = reader.join().unwrap();
    assert!(text.contains("/dev/pts/") && text.contains("ex-5"), "{text}");
    let err = String::from_utf8_lossy(&f.rt(&["exec", "-t", &f.id, "--", "true"]).stderr).into_owned();
    assert!(err.contains("--tty needs --console-socket"), "{err}");
    f.rt_ok(&["delete", "--force", &f.id]);
}
