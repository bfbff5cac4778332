//! The runner's framing on stdin and stdout: each message after its length,
//! a 4-byte big-endian integer.

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The next message of `input`, or `None` at a clean end (before a length).
pub(crate) async fn read<M: prost::Message + Default>(
    input: &mut (impl AsyncRead + Unpin),
) -> anyhow::Result<Option<M>> {
    let mut length = [0; 4];
    match input.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error).context("cannot read a message length"),
    }
    let length = u32::from_be_bytes(length) as usize;
    let mut message = vec![0; length];
    input
        .read_exact(&mut message)
        .await
        .with_context(|| format!("input ended inside a message of {length} bytes"))?;
    M::decode(message.as_slice())
        .with_context(|| format!("a {length}-byte message that does not decode"))
        .map(Some)
}

/// Writes `message` to `output`, after its length, and flushes.
pub(crate) async fn write(
    output: &mut (impl AsyncWrite + Unpin),
    message: &impl prost::Message,
) -> anyhow::Result<()> {
    let encoded = message.encode_to_vec();
    let length = u32::try_from(encoded.len()).context("a message over 4 GiB")?;
    output.write_all(&length.to_be_bytes()).await?;
    output.write_all(&encoded).await?;
    output.flush().await?;
    Ok(())
}
