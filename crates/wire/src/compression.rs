//! Message compressions by the names `grpc-encoding` and Connect's headers
//! use, and decompression with a limit on what it may grow to. tonic has
//! gzip, zstd and deflate; brotli and snappy (Connect's `br` and `snappy`)
//! are only here, and the server and client library carry them past tonic.

use std::io::{Read, Write};

use bytes::Bytes;

/// A message compression named by `grpc-encoding` or its Connect equivalents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// None.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
    /// Zstandard (RFC 8878).
    Zstd,
    /// zlib-wrapped DEFLATE (RFC 1950), as HTTP's `deflate` and tonic's are.
    Deflate,
    /// Brotli (RFC 7932), `br`.
    Brotli,
    /// Snappy in its framing format, as Go's `snappy.NewReader` reads it.
    Snappy,
}

/// Why a message could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// The bytes are not of the compression named.
    #[error("cannot decompress the message: {0}")]
    Corrupt(#[source] std::io::Error),
    /// The message grows past the limit.
    #[error("the message decompresses to more than the limit of {max} bytes")]
    TooLarge {
        /// The limit, in bytes.
        max: usize,
    },
}

impl Compression {
    /// The compression `name` names; None for one not known here.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"identity" => Some(Self::Identity),
            b"gzip" => Some(Self::Gzip),
            b"zstd" => Some(Self::Zstd),
            b"deflate" => Some(Self::Deflate),
            b"br" => Some(Self::Brotli),
            b"snappy" => Some(Self::Snappy),
            _ => None,
        }
    }

    /// Its name in `grpc-encoding` and Connect's headers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Deflate => "deflate",
            Self::Brotli => "br",
            Self::Snappy => "snappy",
        }
    }

    /// Whether tonic compresses and decompresses it itself.
    pub fn in_tonic(self) -> bool {
        !matches!(self, Self::Brotli | Self::Snappy)
    }

    /// `bytes` compressed (as they are, for identity).
    pub fn compress(self, bytes: &[u8]) -> Bytes {
        let written = match self {
            Self::Identity => return Bytes::copy_from_slice(bytes),
            Self::Gzip => return crate::framing::gzip(bytes),
            Self::Zstd => zstd::encode_all(bytes, 0),
            Self::Deflate => {
                let mut encoder =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(bytes).and_then(|()| encoder.finish())
            }
            Self::Brotli => {
                let mut out = Vec::new();
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 4,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &bytes[..], &mut out, &params).map(|_| out)
            }
            Self::Snappy => {
                let mut encoder = snap::write::FrameEncoder::new(Vec::new());
                encoder
                    .write_all(bytes)
                    .and_then(|()| encoder.into_inner().map_err(|error| error.into_error()))
            }
        };
        written.expect("compressing into a Vec cannot fail").into()
    }

    /// `bytes` decompressed, refused past `max` bytes.
    pub fn decompress(self, bytes: &[u8], max: usize) -> Result<Bytes, DecompressError> {
        let mut out = Vec::new();
        let limit = max as u64 + 1;
        let read = match self {
            Self::Identity => return Ok(Bytes::copy_from_slice(bytes)),
            Self::Gzip => flate2::read::GzDecoder::new(bytes)
                .take(limit)
                .read_to_end(&mut out),
            Self::Zstd => zstd::Decoder::new(bytes)
                .and_then(|decoder| decoder.take(limit).read_to_end(&mut out)),
            Self::Deflate => flate2::read::ZlibDecoder::new(bytes)
                .take(limit)
                .read_to_end(&mut out),
            Self::Brotli => brotli::Decompressor::new(bytes, 4096)
                .take(limit)
                .read_to_end(&mut out),
            Self::Snappy => snap::read::FrameDecoder::new(bytes)
                .take(limit)
                .read_to_end(&mut out),
        };
        read.map_err(DecompressError::Corrupt)?;
        if out.len() > max {
            return Err(DecompressError::TooLarge { max });
        }
        Ok(out.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_compression_round_trips_and_is_held_to_its_limit() {
        let message = vec![7u8; 1000];
        let gzip = crate::framing::gzip(&message);
        assert_eq!(Compression::Gzip.decompress(&gzip, 1000).unwrap(), message);
        assert!(matches!(
            Compression::Gzip.decompress(&gzip, 999),
            Err(DecompressError::TooLarge { max: 999 })
        ));
        for compression in [
            Compression::Zstd,
            Compression::Deflate,
            Compression::Brotli,
            Compression::Snappy,
            Compression::Identity,
        ] {
            assert_eq!(
                Compression::from_name(compression.name().as_bytes()),
                Some(compression)
            );
            let compressed = compression.compress(&message);
            assert_eq!(compression.decompress(&compressed, 1000).unwrap(), message);
        }
        assert!(matches!(
            Compression::Deflate.decompress(b"not zlib", 1000),
            Err(DecompressError::Corrupt(_))
        ));
    }
}
