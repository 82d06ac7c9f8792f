//! The backend side: a connection to the encoder worker's socket, and a call that waits for the
//! reply in short slices so that the caller can honour cancels and statement_timeout between them.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::protocol::{self, Reply, Request};

/// How long one wait slice lasts before the caller's `between` hook runs.
pub const WAIT_SLICE: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub enum CallError {
    /// The connection broke (the worker exited or restarted): reconnect and retry once.
    Io(io::Error),
    /// The reply could not be read back.
    Protocol(String),
    /// The caller's `keep_waiting` hook said stop (e.g. the worker is shutting down).
    Abandoned,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Io(e) => write!(f, "lost the connection to the encoder worker: {e}"),
            CallError::Protocol(m) => write!(f, "bad reply from the encoder worker: {m}"),
            CallError::Abandoned => write!(f, "the call to the encoder worker was abandoned"),
        }
    }
}

pub struct Client {
    stream: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> io::Result<Client> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(WAIT_SLICE))?;
        Ok(Client { stream })
    }

    /// Sends `request` and waits for its reply, calling `keep_waiting` after every wait slice
    /// without data: `false` (or a panic or error raised there) abandons the call; drop the
    /// client then, since its reply may still arrive.
    pub fn call(&mut self, request: &Request, mut keep_waiting: impl FnMut() -> bool) -> Result<Reply, CallError> {
        let body = protocol::encode_request(request);
        protocol::write_frame(&mut self.stream, &body).map_err(CallError::Io)?;
        let mut len = [0u8; 4];
        self.read_full(&mut len, &mut keep_waiting)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > protocol::MAX_FRAME {
            return Err(CallError::Protocol(format!("frame of {len} bytes")));
        }
        let mut reply = vec![0u8; len];
        self.read_full(&mut reply, &mut keep_waiting)?;
        protocol::decode_reply(&reply).map_err(CallError::Protocol)
    }

    fn read_full(&mut self, buf: &mut [u8], keep_waiting: &mut impl FnMut() -> bool) -> Result<(), CallError> {
        let mut at = 0;
        while at < buf.len() {
            match self.stream.read(&mut buf[at..]) {
                Ok(0) => return Err(CallError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => at += n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if !keep_waiting() {
                        return Err(CallError::Abandoned);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CallError::Io(e)),
            }
        }
        Ok(())
    }

    /// For tests: sends raw bytes.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }
}
