//! One TCP connection carrying the PLC link, for either end (sortd's PLC thread and the
//! PLC simulator): non-blocking connect, reads sized to what the sans-IO link can take,
//! and an outbound buffer that survives partial writes.
//!
//! It moves bytes only; the protocol is [`crate::plc`]'s.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// Progress of a non-blocking connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectProgress {
    /// The connection is established.
    Connected,
    /// Still connecting; wait for the next writable event.
    Pending,
    /// The connect failed.
    Failed,
}

/// What one read produced.
#[derive(Debug)]
pub enum ReadOutcome<'a> {
    /// Bytes arrived.
    Data(&'a [u8]),
    /// Nothing more to read now (or no room to read into).
    WouldBlock,
    /// The peer closed or the connection failed.
    Closed,
}

/// A PLC-link connection and its buffers.
#[derive(Debug)]
pub struct LinkSocket {
    stream: Option<TcpStream>,
    token: Token,
    connecting: bool,
    /// Whether the stream is registered for readable events (it always is for writable).
    read_events: bool,
    outbound: Vec<u8>,
    outbound_sent: usize,
    inbound: Box<[u8]>,
}

impl LinkSocket {
    /// No connection yet; reads take at most `read_chunk_bytes` at a time.
    pub fn new(read_chunk_bytes: usize) -> LinkSocket {
        LinkSocket {
            stream: None,
            token: Token(0),
            connecting: false,
            read_events: false,
            outbound: Vec::with_capacity(64 * 1024),
            outbound_sent: 0,
            inbound: vec![0; read_chunk_bytes.max(1)].into_boxed_slice(),
        }
    }

    /// Takes over `stream` (registered for reading and writing under `token`). A
    /// `connecting` stream is not used until [`LinkSocket::finish_connect`] says so.
    /// Any previous connection is closed first.
    pub fn attach(
        &mut self,
        registry: &Registry,
        mut stream: TcpStream,
        token: Token,
        connecting: bool,
    ) -> io::Result<()> {
        self.detach(registry);
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        if !connecting {
            let _ = stream.set_nodelay(true);
        }
        self.stream = Some(stream);
        self.token = token;
        self.connecting = connecting;
        self.read_events = true;
        Ok(())
    }

    /// Whether readable events are reported (see [`LinkSocket::set_read_events`]).
    pub fn read_events(&self) -> bool {
        self.read_events
    }

    /// Stops (`false`) or resumes (`true`) readable events for the connection; writable
    /// events and errors are always reported. While they are off, bytes wait in the
    /// kernel until the owner reads; resuming reports bytes already waiting at once.
    pub fn set_read_events(&mut self, registry: &Registry, on: bool) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        if on == self.read_events {
            return Ok(());
        }
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::WRITABLE
        };
        registry.reregister(stream, self.token, interest)?;
        self.read_events = on;
        Ok(())
    }

    /// Closes the connection, dropping unsent bytes. Returns whether there was one.
    pub fn detach(&mut self, registry: &Registry) -> bool {
        self.outbound.clear();
        self.outbound_sent = 0;
        self.connecting = false;
        self.read_events = false;
        match self.stream.take() {
            Some(mut stream) => {
                let _ = registry.deregister(&mut stream);
                true
            }
            None => false,
        }
    }

    /// Whether a connection is established.
    pub fn is_open(&self) -> bool {
        self.stream.is_some() && !self.connecting
    }

    /// Whether a connect is in progress.
    pub fn is_connecting(&self) -> bool {
        self.stream.is_some() && self.connecting
    }

    /// After a writable event on a connecting stream: did the connect succeed?
    pub fn finish_connect(&mut self) -> ConnectProgress {
        let Some(stream) = self.stream.as_ref() else {
            return ConnectProgress::Failed;
        };
        if !self.connecting {
            return ConnectProgress::Connected;
        }
        if matches!(stream.take_error(), Ok(Some(_)) | Err(_)) {
            return ConnectProgress::Failed;
        }
        match stream.peer_addr() {
            Ok(_) => {
                let _ = stream.set_nodelay(true);
                self.connecting = false;
                ConnectProgress::Connected
            }
            Err(error) if error.kind() == io::ErrorKind::NotConnected => ConnectProgress::Pending,
            Err(_) => ConnectProgress::Failed,
        }
    }

    /// Reads at most `room_bytes`.
    pub fn read(&mut self, room_bytes: usize) -> ReadOutcome<'_> {
        if !self.is_open() {
            return ReadOutcome::WouldBlock;
        }
        let Some(stream) = self.stream.as_mut() else {
            return ReadOutcome::WouldBlock;
        };
        let limit = room_bytes.min(self.inbound.len());
        if limit == 0 {
            return ReadOutcome::WouldBlock;
        }
        loop {
            let Some(buffer) = self.inbound.get_mut(..limit) else {
                return ReadOutcome::WouldBlock;
            };
            return match stream.read(buffer) {
                Ok(0) => ReadOutcome::Closed,
                Ok(count) => ReadOutcome::Data(self.inbound.get(..count).unwrap_or_default()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => ReadOutcome::Closed,
            };
        }
    }

    /// The buffer to append outbound bytes to (the sans-IO side's `poll_transmit`).
    pub fn outbound(&mut self) -> &mut Vec<u8> {
        if self.outbound_sent > 0 && self.outbound_sent == self.outbound.len() {
            self.outbound.clear();
            self.outbound_sent = 0;
        }
        &mut self.outbound
    }

    /// Bytes waiting to be written.
    pub fn outbound_pending(&self) -> usize {
        self.outbound.len() - self.outbound_sent
    }

    /// Writes what it can. Returns false when the connection failed.
    pub fn flush(&mut self) -> bool {
        if !self.is_open() {
            return true;
        }
        let Some(stream) = self.stream.as_mut() else {
            return true;
        };
        while self.outbound_sent < self.outbound.len() {
            let pending = self.outbound.get(self.outbound_sent..).unwrap_or_default();
            match stream.write(pending) {
                Ok(0) => return false,
                Ok(count) => self.outbound_sent += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if self.outbound_sent == self.outbound.len() {
            self.outbound.clear();
            self.outbound_sent = 0;
        }
        true
    }
}
