//! HPACK header block decoding (RFC 7541), for the HTTP/2 reader.
//!
//! It decodes exactly as `loona_hpack::Decoder` does (the same errors, the
//! same table rules; a test compares the two on random blocks), but decodes
//! Huffman strings with a table built once: that crate builds its Huffman
//! decoder (two levels of hash maps over 257 codes) again for every string,
//! which was nine tenths of an HTTP/2 replay's time.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::OnceLock;

/// Why a header block could not be decoded. The table may differ from the
/// sender's from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// An integer ran past the block or over five octets.
    Integer,
    /// A string ran past the block.
    String,
    /// A Huffman string with more than 7 bits of padding, padding that is
    /// not the start of EOS, or EOS inside it.
    Huffman,
    /// An index beyond the static and dynamic tables.
    Index,
    /// A table size update above the most allowed.
    TableSize,
    /// A block that ends with a table size update.
    SizeUpdateAtEnd,
}

/// The decoder of one direction of a connection: its dynamic table.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first.
    dynamic: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    max_allowed: usize,
}

impl Decoder {
    /// A decoder with HTTP/2's initial table size (4,096), which a block may
    /// change up to `max_allowed`.
    pub fn new(max_allowed: usize) -> Decoder {
        Decoder {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: 4096,
            max_allowed,
        }
    }

    /// Decode one header block, calling `field` with each name and value in
    /// order.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(Cow<'_, [u8]>, Cow<'_, [u8]>),
    ) -> Result<(), Error> {
        let mut at = 0;
        let mut last_was_size_update = false;
        while at < block.len() {
            let rest = &block[at..];
            let first = rest[0];
            last_was_size_update = first & 0xe0 == 0x20;
            at += if first & 0x80 != 0 {
                let (index, n) = integer(rest, 7)?;
                let (name, value) = self.entry(index)?;
                field(Cow::Borrowed(name), Cow::Borrowed(value));
                n
            } else if first & 0x40 != 0 {
                let ((name, value), n) = self.literal(rest, 6)?;
                let (name, value) = (name.into_owned(), value.into_owned());
                field(Cow::Borrowed(&name), Cow::Borrowed(&value));
                self.add(name, value);
                n
            } else if first & 0x20 != 0 {
                let (size, n) = integer(rest, 5)?;
                if size > self.max_allowed {
                    return Err(Error::TableSize);
                }
                self.max_size = size;
                self.evict();
                n
            } else {
                // Without indexing (0000) or never indexed (0001).
                let ((name, value), n) = self.literal(rest, 4)?;
                field(name, value);
                n
            };
        }
        if last_was_size_update {
            return Err(Error::SizeUpdateAtEnd);
        }
        Ok(())
    }

    /// Index 1 to 61 in the static table, then the dynamic one, newest first.
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), Error> {
        let i = index.checked_sub(1).ok_or(Error::Index)?;
        match STATIC.get(i) {
            Some(&(name, value)) => Ok((name, value)),
            None => self
                .dynamic
                .get(i - STATIC.len())
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(Error::Index),
        }
    }

    fn literal<'b>(&'b self, buf: &'b [u8], prefix: u8) -> Result<Literal<'b>, Error> {
        let (index, mut n) = integer(buf, prefix)?;
        let name = if index == 0 {
            let (name, len) = string(&buf[n..])?;
            n += len;
            name
        } else {
            Cow::Borrowed(self.entry(index)?.0)
        };
        let (value, len) = string(&buf[n..])?;
        Ok(((name, value), n + len))
    }

    fn add(&mut self, name: Vec<u8>, value: Vec<u8>) {
        self.size += name.len() + value.len() + 32;
        self.dynamic.push_front((name, value));
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            let Some((name, value)) = self.dynamic.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= name.len() + value.len() + 32;
        }
    }
}

type Literal<'b> = ((Cow<'b, [u8]>, Cow<'b, [u8]>), usize);

/// An integer with a `prefix`-bit prefix (RFC 7541 §5.1), and the octets it
/// took; at most five of them, as loona-hpack allows.
fn integer(buf: &[u8], prefix: u8) -> Result<(usize, usize), Error> {
    let mask = u8::MAX >> (8 - prefix);
    let first = *buf.first().ok_or(Error::Integer)?;
    let mut value = usize::from(first & mask);
    if value < usize::from(mask) {
        return Ok((value, 1));
    }
    for (k, &b) in buf.iter().enumerate().skip(1).take(4) {
        value += usize::from(b & 0x7f) << (7 * (k - 1));
        if b & 0x80 == 0 {
            return Ok((value, k + 1));
        }
    }
    Err(Error::Integer)
}

/// A string literal (RFC 7541 §5.2), and the octets it took.
fn string(buf: &[u8]) -> Result<(Cow<'_, [u8]>, usize), Error> {
    let (len, n) = integer(buf, 7)?;
    let raw = buf
        .get(n..n.checked_add(len).ok_or(Error::String)?)
        .ok_or(Error::String)?;
    if buf[0] & 0x80 == 0 {
        return Ok((Cow::Borrowed(raw), n + len));
    }
    Ok((Cow::Owned(huffman(raw)?), n + len))
}

/// The Huffman codes of one length, sorted, with their symbols (256: EOS).
type Codes = [Vec<(u32, u16)>; 31];

fn codes() -> &'static Codes {
    static CODES: OnceLock<Codes> = OnceLock::new();
    CODES.get_or_init(|| {
        let mut by_len: Codes = Default::default();
        for (symbol, &(code, len)) in HUFFMAN.iter().enumerate() {
            by_len[usize::from(len)].push((code, symbol as u16));
        }
        for codes in &mut by_len {
            codes.sort_unstable();
        }
        by_len
    })
}

/// Decode a Huffman string (RFC 7541 §5.2, Appendix B) bit by bit, as
/// loona-hpack does: a symbol as soon as the bits read since the last one
/// make a code; EOS is an error; at the end, at most 7 bits that begin EOS.
fn huffman(raw: &[u8]) -> Result<Vec<u8>, Error> {
    let codes = codes();
    let mut out = Vec::with_capacity(raw.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in raw {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if let Some(of_len) = codes.get(len) {
                if let Ok(i) = of_len.binary_search_by_key(&code, |&(c, _)| c) {
                    let symbol = of_len[i].1;
                    out.push(u8::try_from(symbol).map_err(|_| Error::Huffman)?);
                    (code, len) = (0, 0);
                }
            }
        }
    }
    // The padding: fewer than 8 bits, all ones (the start of EOS).
    if len > 7 || code != (1 << len) - 1 {
        return Err(Error::Huffman);
    }
    Ok(out)
}

/// RFC 7541 Appendix A.
static STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// RFC 7541 Appendix B: (code, length in bits) of each symbol, EOS last.
static HUFFMAN: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// What a decoder made of a block: its fields, or that it failed.
    type Outcome = Result<Vec<(Vec<u8>, Vec<u8>)>, ()>;

    fn ours(d: &mut Decoder, block: &[u8]) -> Outcome {
        let mut fields = Vec::new();
        d.decode(block, |n, v| fields.push((n.into_owned(), v.into_owned())))
            .map(|()| fields)
            .map_err(|_| ())
    }

    fn loona(d: &mut loona_hpack::Decoder<'static>, block: &[u8]) -> Outcome {
        d.decode(block).map_err(|_| ())
    }

    fn pair() -> (Decoder, loona_hpack::Decoder<'static>) {
        let mut reference = loona_hpack::Decoder::new();
        reference.set_max_allowed_table_size(1 << 20);
        (Decoder::new(1 << 20), reference)
    }

    /// A deterministic stream of pseudo-random numbers (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    /// `s` Huffman-coded (Appendix B), padded with the start of EOS.
    fn huffman_coded(s: &[u8]) -> Vec<u8> {
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0u32);
        for &b in s {
            let (code, len) = HUFFMAN[usize::from(b)];
            acc = (acc << len) | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
        }
        out
    }

    /// A string literal of `s`, Huffman-coded or not.
    fn literal(s: &[u8], coded: bool) -> Vec<u8> {
        let body = if coded { huffman_coded(s) } else { s.to_vec() };
        let mut out = Vec::new();
        let flag = if coded { 0x80 } else { 0 };
        if body.len() < 127 {
            out.push(flag | body.len() as u8);
        } else {
            out.push(flag | 127);
            let mut n = body.len() - 127;
            while n >= 128 {
                out.push((n % 128) as u8 | 0x80);
                n /= 128;
            }
            out.push(n as u8);
        }
        out.extend(body);
        out
    }

    #[test]
    fn huffman_strings_decode_to_what_was_coded_as_loona_decodes_them() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let s: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            // A literal without indexing, with a literal name.
            let mut block = vec![0x00];
            block.extend(literal(b"x-name", rng.below(2) == 0));
            block.extend(literal(&s, true));
            let (mut a, mut b) = pair();
            let got = ours(&mut a, &block);
            assert_eq!(got, Ok(vec![(b"x-name".to_vec(), s.clone())]));
            assert_eq!(got, loona(&mut b, &block));
        }
        // Broken ones: a whole byte of padding, padding that is not ones,
        // EOS inside the string; and a byte of a code cut off.
        // "abc" is 16 bits: no padding.
        let mut padded = huffman_coded(b"abc");
        padded.push(0xff);
        // "a" is 5 bits: 3 of padding.
        let zero_padded = [huffman_coded(b"a")[0] & 0xf8];
        let eos = [0xff, 0xff, 0xff, 0xfc];
        for bad in [
            &padded[..],
            &zero_padded,
            &eos,
            &huffman_coded(b"\x00")[..1],
        ] {
            let mut block = vec![0x00];
            block.extend(literal(b"x-name", false));
            block.push(0x80 | bad.len() as u8);
            block.extend(bad);
            let (mut a, mut b) = pair();
            assert_eq!(ours(&mut a, &block), Err(()), "{bad:02x?}");
            assert_eq!(loona(&mut b, &block), Err(()), "{bad:02x?}");
        }
    }

    #[test]
    fn blocks_decode_as_loona_decodes_them_even_when_broken() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut agreed_ok = 0;
        for round in 0..2000 {
            let (mut a, mut b) = pair();
            // Blocks on one connection, so the dynamic tables (4,096 bytes,
            // or what a size update says) fill and evict.
            for _ in 0..8 {
                let mut block = Vec::new();
                for _ in 0..rng.below(6) {
                    match rng.below(6) {
                        0 => block.push(0x80 | (1 + rng.below(75)) as u8),
                        1 => {
                            block.push(0x40);
                            block.extend(literal(b"k", rng.below(2) == 0));
                            let v: Vec<u8> =
                                (0..rng.below(900)).map(|_| rng.next() as u8).collect();
                            block.extend(literal(&v, rng.below(2) == 0));
                        }
                        2 => {
                            block.push(0x40 | (1 + rng.below(62)) as u8);
                            block.extend(literal(b"value", rng.below(2) == 0));
                        }
                        3 if rng.below(4) == 0 => {
                            // 2,048 to 6,143 bytes.
                            let n = 2048 + rng.below(4096);
                            block.extend([0x3f, (n - 31) as u8 | 0x80, ((n - 31) >> 7) as u8]);
                        }
                        3 => block.push(0x20 | rng.below(32) as u8),
                        4 => {
                            block.push((rng.below(2) as u8 * 0x10) | rng.below(16) as u8);
                            block.extend(literal(b"v", rng.below(2) == 0));
                        }
                        // Noise: whatever bytes come.
                        _ => block.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
                    }
                }
                if round % 7 == 0 && !block.is_empty() {
                    let cut = rng.below(block.len() as u64);
                    block.truncate(cut);
                }
                let (x, y) = (ours(&mut a, &block), loona(&mut b, &block));
                assert_eq!(x, y, "{block:02x?}");
                agreed_ok += usize::from(x.is_ok());
                if x.is_err() {
                    break;
                }
            }
        }
        // Both outcomes were exercised.
        assert!(agreed_ok > 1000, "{agreed_ok}");
    }

    #[test]
    fn blocks_loona_encodes_decode_back() {
        let mut enc = loona_hpack::Encoder::new();
        let mut d = Decoder::new(1 << 20);
        for k in 0..200u32 {
            let path = format!("/item/{}", k % 17);
            let fields: Vec<(&[u8], &[u8])> = vec![
                (b":method", b"GET"),
                (b":path", path.as_bytes()),
                (b":authority", b"example.test"),
                (b"user-agent", b"conntrace-test/1"),
            ];
            let block = enc.encode(fields.iter().copied());
            let got = ours(&mut d, &block).expect("decodes");
            let want: Vec<(Vec<u8>, Vec<u8>)> = fields
                .iter()
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect();
            assert_eq!(got, want);
        }
    }

    /// Entries of 1,024 bytes each (RFC 7541 §4.1): exactly 4 fit in 4,096.
    #[test]
    fn the_dynamic_table_holds_what_4096_bytes_hold_newest_first() {
        let (mut a, mut b) = pair();
        for k in 0..5u8 {
            let mut block = vec![0x40];
            block.extend(literal(b"k", false));
            block.extend(literal(&[b'0' + k; 991], false));
            assert_eq!(ours(&mut a, &block), loona(&mut b, &block));
        }
        for index in 62..=66u8 {
            let block = [0x80 | index];
            let got = ours(&mut a, &block);
            assert_eq!(got, loona(&mut b, &block), "index {index}");
            let want = match index {
                62..=65 => Ok(vec![(b"k".to_vec(), vec![b'0' + 4 - (index - 62); 991])]),
                _ => Err(()),
            };
            assert_eq!(got, want, "index {index}");
        }
    }

    #[test]
    fn a_table_larger_than_allowed_and_a_trailing_size_update_are_errors() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            d.decode(&[0x3f, 0xe2, 0x1f, 0x82], |_, _| {}),
            Err(Error::TableSize)
        );
        let mut d = Decoder::new(4096);
        assert_eq!(
            d.decode(&[0x82, 0x20], |_, _| {}),
            Err(Error::SizeUpdateAtEnd)
        );
        assert_eq!(d.decode(&[0x20, 0x82], |_, _| {}), Ok(()));
        assert_eq!(d.decode(&[0x80], |_, _| {}), Err(Error::Index));
    }
}
