//! Domain names in wire form.
//!
//! A wire name is a sequence of labels, each a length byte (1–63) followed by
//! that many bytes, ending in the zero-length root label. `web.default` is
//! `03 77 65 62 07 64 65 66 61 75 6c 74 00`. The whole name, root byte
//! included, is at most 255 bytes.
//!
//! [`NameBuf`] holds one such name in a fixed buffer, so building a lookup key
//! never touches the heap. Functions that take `&[u8]` expect a name that has
//! already been validated (every `NameBuf` is).

use core::fmt;

/// The longest a name may be in wire form, root byte included (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// The longest a single label may be (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a name was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The input ended inside the name.
    ShortInput,
    /// A compression pointer where none is allowed (the question).
    Pointer,
    /// A label type other than a plain length (0x40 or 0x80 prefixes).
    LabelType,
    /// A label longer than 63 bytes.
    LabelTooLong,
    /// A name longer than 255 bytes in wire form.
    NameTooLong,
    /// An empty label in presentation form (`a..b`).
    EmptyLabel,
    /// A bad `\` escape in presentation form.
    BadEscape,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::ShortInput => "name runs past the end of the input",
            NameError::Pointer => "compression pointer not allowed here",
            NameError::LabelType => "unsupported label type",
            NameError::LabelTooLong => "label longer than 63 bytes",
            NameError::NameTooLong => "name longer than 255 bytes",
            NameError::EmptyLabel => "empty label",
            NameError::BadEscape => "bad escape sequence",
        })
    }
}

impl std::error::Error for NameError {}

/// One wire-form name in a fixed, stack-sized buffer.
///
/// Invariant: `bytes[..len]` is a valid uncompressed wire name ending in the
/// root label, and `1 <= len <= 255`.
#[derive(Clone, Copy)]
pub struct NameBuf {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
}

impl NameBuf {
    /// The root name, `.`.
    pub const ROOT: NameBuf = NameBuf {
        bytes: [0; MAX_NAME_LEN],
        len: 1,
    };

    /// Reads an uncompressed name at the start of `input`, as in a question.
    ///
    /// Returns the name and the number of bytes it took. Compression pointers
    /// are refused: a question has nothing earlier to point at.
    pub fn from_wire(input: &[u8]) -> Result<(NameBuf, usize), NameError> {
        let len = validate_uncompressed(input)?;
        let mut name = NameBuf::ROOT;
        name.bytes[..len].copy_from_slice(&input[..len]);
        name.len = len as u8;
        Ok((name, len))
    }

    /// Like [`NameBuf::from_wire`], but folds ASCII letters to lower case, to
    /// make a lookup key.
    pub fn lowercase_from_wire(input: &[u8]) -> Result<(NameBuf, usize), NameError> {
        let mut name = NameBuf::ROOT;
        let len = name.read_lowercase(input)?;
        Ok((name, len))
    }

    /// Reads an uncompressed name at the start of `input` into this buffer,
    /// folded to lower case, in one pass; returns the bytes it took. On error
    /// the buffer is left unspecified but valid.
    pub fn read_lowercase(&mut self, input: &[u8]) -> Result<usize, NameError> {
        let len = validate_uncompressed(input)?;
        // Length bytes are at most 63, below 'A', so folding them is harmless.
        for (slot, byte) in self.bytes[..len].iter_mut().zip(&input[..len]) {
            *slot = byte.to_ascii_lowercase();
        }
        self.len = len as u8;
        Ok(len)
    }

    /// Parses presentation form: dot-separated labels with `\.`, `\\` and
    /// `\DDD` escapes. A trailing dot is optional; every name is absolute.
    /// `""` and `"."` are the root.
    pub fn from_text(text: &str) -> Result<NameBuf, NameError> {
        let text = text.as_bytes();
        let mut name = NameBuf::ROOT;
        if text.is_empty() || text == b"." {
            return Ok(name);
        }
        let mut out = 0usize; // where the current label's length byte sits
        let mut label_len = 0usize;
        let mut i = 0usize;
        let push = |name: &mut NameBuf, out: usize, label_len: &mut usize, byte: u8| {
            *label_len += 1;
            if *label_len > MAX_LABEL_LEN {
                return Err(NameError::LabelTooLong);
            }
            let at = out + *label_len;
            // Leave room for the root byte after this label.
            if at + 1 >= MAX_NAME_LEN {
                return Err(NameError::NameTooLong);
            }
            name.bytes[at] = byte;
            Ok(())
        };
        while i < text.len() {
            match text[i] {
                b'.' => {
                    if label_len == 0 {
                        return Err(NameError::EmptyLabel);
                    }
                    name.bytes[out] = label_len as u8;
                    out += label_len + 1;
                    label_len = 0;
                    i += 1;
                    if i == text.len() {
                        break;
                    }
                }
                b'\\' => {
                    let rest = &text[i + 1..];
                    let (byte, used) = match rest {
                        [a, b, c, ..] if a.is_ascii_digit() => {
                            if !b.is_ascii_digit() || !c.is_ascii_digit() {
                                return Err(NameError::BadEscape);
                            }
                            let value = u32::from(a - b'0') * 100
                                + u32::from(b - b'0') * 10
                                + u32::from(c - b'0');
                            let byte = u8::try_from(value).map_err(|_| NameError::BadEscape)?;
                            (byte, 3)
                        }
                        [a, ..] if !a.is_ascii_digit() => (*a, 1),
                        _ => return Err(NameError::BadEscape),
                    };
                    push(&mut name, out, &mut label_len, byte)?;
                    i += 1 + used;
                }
                byte => {
                    push(&mut name, out, &mut label_len, byte)?;
                    i += 1;
                }
            }
        }
        if label_len > 0 {
            name.bytes[out] = label_len as u8;
            out += label_len + 1;
        }
        name.bytes[out] = 0;
        name.len = (out + 1) as u8;
        Ok(name)
    }

    /// The name in wire form, root byte included.
    pub fn as_wire(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Length in wire form, root byte included.
    pub fn wire_len(&self) -> usize {
        usize::from(self.len)
    }

    /// Folds ASCII letters to lower case in place.
    pub fn make_lowercase(&mut self) {
        // Length bytes are at most 63, below 'A', so folding every byte is safe.
        self.bytes[..usize::from(self.len)].make_ascii_lowercase();
    }

    /// Returns a lower-cased copy.
    pub fn to_lowercase(&self) -> NameBuf {
        let mut copy = *self;
        copy.make_lowercase();
        copy
    }

    /// Number of labels, not counting the root.
    pub fn label_count(&self) -> usize {
        labels(self.as_wire()).count()
    }

    /// Prepends one label: `prepend_label(b"www")` on `example.` gives
    /// `www.example.`.
    pub fn prepend_label(&self, label: &[u8]) -> Result<NameBuf, NameError> {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong);
        }
        let new_len = usize::from(self.len) + 1 + label.len();
        if new_len > MAX_NAME_LEN {
            return Err(NameError::NameTooLong);
        }
        let mut out = NameBuf::ROOT;
        out.bytes[0] = label.len() as u8;
        out.bytes[1..=label.len()].copy_from_slice(label);
        out.bytes[1 + label.len()..new_len].copy_from_slice(self.as_wire());
        out.len = new_len as u8;
        Ok(out)
    }

    /// Appends `suffix` after this name's labels: `www.` + `example.` gives
    /// `www.example.`.
    pub fn append(&self, suffix: &NameBuf) -> Result<NameBuf, NameError> {
        let head = usize::from(self.len) - 1;
        let new_len = head + suffix.wire_len();
        if new_len > MAX_NAME_LEN {
            return Err(NameError::NameTooLong);
        }
        let mut out = *self;
        out.bytes[head..new_len].copy_from_slice(suffix.as_wire());
        out.len = new_len as u8;
        Ok(out)
    }

    /// The name with its first label removed; the root stays the root.
    pub fn parent(&self) -> NameBuf {
        let wire = self.as_wire();
        if wire.len() <= 1 {
            return *self;
        }
        let skip = 1 + usize::from(wire[0]);
        let mut out = NameBuf::ROOT;
        out.bytes[..wire.len() - skip].copy_from_slice(&wire[skip..]);
        out.len = (wire.len() - skip) as u8;
        out
    }

    /// The first label, or `None` for the root.
    pub fn first_label(&self) -> Option<&[u8]> {
        labels(self.as_wire()).next()
    }

    /// True if this name equals `zone` or lies below it, ignoring ASCII case.
    pub fn ends_with(&self, zone: &NameBuf) -> bool {
        suffix_offset(self.as_wire(), zone.as_wire()).is_some()
    }
}

impl PartialEq for NameBuf {
    fn eq(&self, other: &Self) -> bool {
        self.as_wire() == other.as_wire()
    }
}
impl Eq for NameBuf {}

impl PartialOrd for NameBuf {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Orders by wire bytes: stable and cheap, not DNSSEC canonical order.
impl Ord for NameBuf {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_wire().cmp(other.as_wire())
    }
}

impl core::hash::Hash for NameBuf {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_wire().hash(state);
    }
}

impl fmt::Display for NameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_text(self.as_wire(), f)
    }
}

impl fmt::Debug for NameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NameBuf({self})")
    }
}

/// Checks an uncompressed wire name at the start of `input` and returns its
/// length, root byte included.
pub fn validate_uncompressed(input: &[u8]) -> Result<usize, NameError> {
    let mut pos = 0usize;
    loop {
        let Some(&len) = input.get(pos) else {
            return Err(NameError::ShortInput);
        };
        match len & 0xC0 {
            0x00 => {}
            0xC0 => return Err(NameError::Pointer),
            _ => return Err(NameError::LabelType),
        }
        let len = usize::from(len);
        let end = pos + 1 + len;
        // Check the 255 limit before running off the input, so an over-long
        // name is reported as such even when the packet is also short.
        if end > MAX_NAME_LEN {
            return Err(NameError::NameTooLong);
        }
        if end > input.len() {
            return Err(NameError::ShortInput);
        }
        if len == 0 {
            return Ok(end);
        }
        pos = end;
    }
}

/// Skips a possibly compressed name at `input[pos..]`, as found in records,
/// and returns the offset just past it. Pointer targets are not followed: a
/// skip only needs the name's extent in place.
pub fn skip_compressed(input: &[u8], mut pos: usize) -> Result<usize, NameError> {
    let start = pos;
    loop {
        let Some(&len) = input.get(pos) else {
            return Err(NameError::ShortInput);
        };
        match len & 0xC0 {
            0x00 if len == 0 => return Ok(pos + 1),
            0x00 => {
                pos += 1 + usize::from(len);
                if pos - start > MAX_NAME_LEN {
                    return Err(NameError::NameTooLong);
                }
            }
            0xC0 => {
                if pos + 2 > input.len() {
                    return Err(NameError::ShortInput);
                }
                return Ok(pos + 2);
            }
            _ => return Err(NameError::LabelType),
        }
    }
}

/// Iterates over the labels of a valid uncompressed wire name, root excluded.
pub fn labels(wire: &[u8]) -> Labels<'_> {
    Labels { wire, pos: 0 }
}

/// Iterator returned by [`labels`].
#[derive(Clone, Debug)]
pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(*self.wire.get(self.pos)?);
        if len == 0 {
            return None;
        }
        let label = self.wire.get(self.pos + 1..self.pos + 1 + len)?;
        self.pos += 1 + len;
        Some(label)
    }
}

/// If `name` equals `suffix` or ends with it on a label boundary (ASCII case
/// ignored), returns the offset in `name` where the suffix starts.
pub fn suffix_offset(name: &[u8], suffix: &[u8]) -> Option<usize> {
    let start = name.len().checked_sub(suffix.len())?;
    if !name[start..].eq_ignore_ascii_case(suffix) {
        return None;
    }
    // The byte match must fall on a label boundary of `name`.
    let mut pos = 0usize;
    while pos < start {
        pos += 1 + usize::from(name[pos]);
    }
    (pos == start).then_some(start)
}

/// Writes a wire name in presentation form, with a trailing dot, escaping
/// dots, backslashes and bytes outside printable ASCII.
pub fn write_text(wire: &[u8], f: &mut impl fmt::Write) -> fmt::Result {
    let mut any = false;
    for label in labels(wire) {
        any = true;
        for &byte in label {
            match byte {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    write!(f, "\\{}", byte as char)?;
                }
                0x21..=0x7E => f.write_char(byte as char)?,
                _ => write!(f, "\\{byte:03}")?,
            }
        }
        f.write_char('.')?;
    }
    if !any {
        f.write_char('.')?;
    }
    Ok(())
}

/// Presentation form of a wire name, for logs and tests.
pub fn to_text(wire: &[u8]) -> String {
    let mut out = String::with_capacity(wire.len() + 1);
    // Writing into a String cannot fail.
    let _ = write_text(wire, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_with_escapes() {
        let name = NameBuf::from_text(r"a\.b.c\\d.\065\032x.").unwrap();
        assert_eq!(name.as_wire(), b"\x03a.b\x03c\\d\x03A x\x00");
        assert_eq!(name.to_string(), r"a\.b.c\\d.A\032x.");
        assert_eq!(NameBuf::from_text(&name.to_string()).unwrap(), name);
    }

    #[test]
    fn root_and_trailing_dot() {
        assert_eq!(NameBuf::from_text("").unwrap().as_wire(), b"\x00");
        assert_eq!(NameBuf::from_text(".").unwrap().as_wire(), b"\x00");
        assert_eq!(
            NameBuf::from_text("a").unwrap(),
            NameBuf::from_text("a.").unwrap()
        );
        assert_eq!(NameBuf::ROOT.to_string(), ".");
    }

    #[test]
    fn text_errors() {
        assert_eq!(NameBuf::from_text("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(NameBuf::from_text(".a"), Err(NameError::EmptyLabel));
        assert_eq!(NameBuf::from_text(r"a\"), Err(NameError::BadEscape));
        assert_eq!(NameBuf::from_text(r"a\25"), Err(NameError::BadEscape));
        assert_eq!(NameBuf::from_text(r"a\256"), Err(NameError::BadEscape));
        assert_eq!(
            NameBuf::from_text(&"x".repeat(64)),
            Err(NameError::LabelTooLong)
        );
        assert!(NameBuf::from_text(&"x".repeat(63)).is_ok());
        // 4 labels of 63 = 256 bytes plus root: too long. 3×63 + 61 fits in 255.
        let long = [&"x".repeat(63)[..]; 4].join(".");
        assert_eq!(NameBuf::from_text(&long), Err(NameError::NameTooLong));
        let fits = format!("{0}.{0}.{0}.{1}", "x".repeat(63), "y".repeat(61));
        assert_eq!(NameBuf::from_text(&fits).unwrap().wire_len(), 255);
        let over = format!("{0}.{0}.{0}.{1}", "x".repeat(63), "y".repeat(62));
        assert_eq!(NameBuf::from_text(&over), Err(NameError::NameTooLong));
    }

    #[test]
    fn wire_validation() {
        assert_eq!(validate_uncompressed(b"\x01a\x00rest"), Ok(3));
        assert_eq!(validate_uncompressed(b"\x01a"), Err(NameError::ShortInput));
        assert_eq!(validate_uncompressed(b"\xC0\x0C"), Err(NameError::Pointer));
        assert_eq!(
            validate_uncompressed(b"\x41a\x00"),
            Err(NameError::LabelType)
        );
        assert_eq!(
            validate_uncompressed(b"\x81a\x00"),
            Err(NameError::LabelType)
        );
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'x'; 63]);
        }
        long.push(0);
        assert_eq!(validate_uncompressed(&long), Err(NameError::NameTooLong));
    }

    #[test]
    fn suffixes_respect_label_boundaries() {
        let name = NameBuf::from_text("Web.Default.svc.cluster.local").unwrap();
        let zone = NameBuf::from_text("cluster.LOCAL").unwrap();
        assert_eq!(suffix_offset(name.as_wire(), zone.as_wire()), Some(16));
        assert!(name.ends_with(&zone));
        // "ter.local" is a byte suffix of "cluster.local" but not a label suffix.
        let fake = NameBuf::from_text("ter.local").unwrap();
        assert_eq!(suffix_offset(zone.as_wire(), fake.as_wire()), None);
        assert_eq!(
            suffix_offset(name.as_wire(), NameBuf::ROOT.as_wire()),
            Some(30)
        );
    }

    #[test]
    fn label_editing() {
        let zone = NameBuf::from_text("cluster.local").unwrap();
        let svc = zone.prepend_label(b"svc").unwrap();
        assert_eq!(svc.to_string(), "svc.cluster.local.");
        assert_eq!(svc.parent(), zone);
        assert_eq!(svc.first_label(), Some(&b"svc"[..]));
        let joined = NameBuf::from_text("a.b").unwrap().append(&zone).unwrap();
        assert_eq!(joined.to_string(), "a.b.cluster.local.");
        assert_eq!(joined.label_count(), 4);
        assert_eq!(NameBuf::ROOT.parent(), NameBuf::ROOT);
    }

    #[test]
    fn skip_compressed_names() {
        assert_eq!(skip_compressed(b"\x01a\xC0\x0Cxx", 0), Ok(4));
        assert_eq!(skip_compressed(b"\x00", 0), Ok(1));
        assert_eq!(skip_compressed(b"\x01a\xC0", 0), Err(NameError::ShortInput));
        assert_eq!(skip_compressed(b"\x01a\x80", 0), Err(NameError::LabelType));
    }
}
