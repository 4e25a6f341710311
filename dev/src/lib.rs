//! Throwaway peers on loopback, for `wardengate dev` and the end-to-end tests: a real OpenSSH
//! `sshd` (`sshd.rs`), a PostgreSQL cluster made with `initdb` (`postgres.rs`), a FreeRDP
//! shadow server on an Xvfb desktop (`desktop.rs`) and an S3-compatible object store
//! (`s3.rs`), each started as a child that dies with the process that started it
//! (`children.rs`). Nothing here is part of the daemon.

#![forbid(unsafe_code)]

pub mod children;
pub mod desktop;
pub mod postgres;
pub mod s3;
pub mod services;
pub mod sshd;
