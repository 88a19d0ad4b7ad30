//! Sealed files (media): the STREAM construction over XChaCha20-Poly1305, so a file is sealed
//! and opened 64 KiB at a time and never needs a second copy in memory.
//!
//! Layout: `TRLE | version 1 | key id (4) | nonce prefix (19)`, then chunks of 64 KiB of
//! plaintext plus a 16-byte tag; the last chunk is always shorter than 64 KiB (possibly empty),
//! so a reader knows it is last. A chunk's nonce is the prefix, its index (32 bits, big-endian)
//! and a last-chunk flag, so chunks cannot be reordered, dropped or a file cut short. The header
//! and the file's name are associated data of every chunk, so a file renamed to another's name
//! fails to open.

use std::{
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use rand::RngCore;

use super::{KeyId, Keyring, MasterKey};

const MAGIC: &[u8; 4] = b"TRLE";
const VERSION: u8 = 1;
const PREFIX_LEN: usize = 19;
pub const HEADER_LEN: usize = MAGIC.len() + 1 + 4 + PREFIX_LEN;
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// The key id in a sealed file's header; `None` if `header` is not one.
pub fn key_id(header: &[u8]) -> Option<KeyId> {
    if header.len() < HEADER_LEN || &header[..4] != MAGIC || header[4] != VERSION {
        return None;
    }
    Some(KeyId([header[5], header[6], header[7], header[8]]))
}

fn nonce(prefix: &[u8], counter: u32, last: bool) -> XNonce {
    let mut nonce = [0u8; 24];
    nonce[..PREFIX_LEN].copy_from_slice(prefix);
    nonce[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    nonce[23] = u8::from(last);
    nonce.into()
}

fn aad(header: &[u8], name: &str) -> Vec<u8> {
    [header, name.as_bytes()].concat()
}

/// Writes chunks sealed under one key.
struct Sealer<'k, W: Write> {
    cipher: &'k XChaCha20Poly1305,
    prefix: [u8; PREFIX_LEN],
    aad: Vec<u8>,
    counter: u32,
    out: W,
}

impl<'k, W: Write> Sealer<'k, W> {
    fn new(master: &'k MasterKey, name: &str, mut out: W) -> io::Result<Self> {
        let mut prefix = [0u8; PREFIX_LEN];
        rand::thread_rng().fill_bytes(&mut prefix);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.extend_from_slice(&master.id.0);
        header.extend_from_slice(&prefix);
        out.write_all(&header)?;
        Ok(Self { cipher: &master.files, prefix, aad: aad(&header, name), counter: 0, out })
    }

    fn push(&mut self, chunk: &[u8], last: bool) -> io::Result<()> {
        let sealed = self
            .cipher
            .encrypt(&nonce(&self.prefix, self.counter, last), Payload { msg: chunk, aad: &self.aad })
            .map_err(|_| invalid("cannot encrypt a file chunk"))?;
        self.out.write_all(&sealed)?;
        self.counter = self.counter.checked_add(1).ok_or_else(|| invalid("file too large to encrypt"))?;
        Ok(())
    }
}

/// Writes `plaintext` sealed under the active key, for the file called `name`.
pub fn seal(keyring: &Keyring, name: &str, plaintext: &[u8], out: impl Write) -> io::Result<()> {
    let mut sealer = Sealer::new(&keyring.active, name, out)?;
    let mut rest = plaintext;
    while rest.len() >= CHUNK {
        let (chunk, tail) = rest.split_at(CHUNK);
        sealer.push(chunk, false)?;
        rest = tail;
    }
    sealer.push(rest, true)
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Opens a sealed file chunk by chunk, handing each plaintext chunk (and whether it is the last)
/// to `each`.
fn open_chunks(
    keyring: &Keyring,
    name: &str,
    mut input: impl Read,
    mut each: impl FnMut(&[u8], bool) -> io::Result<()>,
) -> io::Result<()> {
    let mut header = [0u8; HEADER_LEN];
    if read_full(&mut input, &mut header)? < HEADER_LEN {
        return Err(invalid(format!("media file {name} is not encrypted or is cut short")));
    }
    let id = key_id(&header).ok_or_else(|| invalid(format!("media file {name} is not encrypted")))?;
    let master = keyring
        .file_key(id)
        .ok_or_else(|| invalid(format!("media file {name} is encrypted with key {id}, which was not given")))?;
    let aad = aad(&header, name);
    let prefix = &header[HEADER_LEN - PREFIX_LEN..];
    let mut block = vec![0u8; CHUNK + TAG];
    let mut counter: u32 = 0;
    loop {
        let read = read_full(&mut input, &mut block)?;
        let last = read < block.len();
        if read < TAG {
            return Err(invalid(format!("media file {name} is cut short")));
        }
        let chunk = master
            .files
            .decrypt(&nonce(prefix, counter, last), Payload { msg: &block[..read], aad: &aad })
            .map_err(|_| invalid(format!("media file {name} fails authentication (damaged or cut short)")))?;
        each(&chunk, last)?;
        if last {
            return Ok(());
        }
        counter = counter.checked_add(1).ok_or_else(|| invalid("file too large"))?;
    }
}

/// Opens the sealed file called `name` whole; `size_hint` sizes the buffer.
pub fn open(keyring: &Keyring, name: &str, input: impl Read, size_hint: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size_hint.saturating_sub(HEADER_LEN));
    open_chunks(keyring, name, input, |chunk, _| {
        out.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(out)
}

/// Re-seals a sealed file under the active key, one chunk at a time (key rotation).
pub fn reseal(keyring: &Keyring, name: &str, input: impl Read, out: impl Write) -> io::Result<()> {
    let mut sealer = Sealer::new(&keyring.active, name, out)?;
    open_chunks(keyring, name, input, |chunk, last| sealer.push(chunk, last))
}

/// The media stores under a media root: the root itself and the remote media cache's own root
/// (`root/remote`).
pub fn media_stores(root: &Path) -> [PathBuf; 2] {
    [root.to_owned(), root.join("remote")]
}

/// The files of one media store (see [`media_stores`]), each with its name: its path below the
/// store without the separators. Uploads in flight (`tmp`) and the remote cache (`remote`) at
/// the top of the store are not its files; a missing store has none.
pub fn store_files(store: &Path) -> io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut pending = vec![(store.to_owned(), String::new())];
    while let Some((dir, name_so_far)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                if !(name_so_far.is_empty() && (file_name == "tmp" || file_name == "remote")) {
                    pending.push((entry.path(), format!("{name_so_far}{file_name}")));
                }
                continue;
            }
            out.push((entry.path(), format!("{name_so_far}{file_name}")));
        }
    }
    Ok(out)
}
