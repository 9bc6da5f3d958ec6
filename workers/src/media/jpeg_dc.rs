//! A baseline JPEG decoded at 1/8 scale from its DC coefficients alone.
//!
//! At 1/8 scale each 8 × 8 block becomes one pixel, the block's average, which is its
//! DC coefficient: libjpeg's `jpeg_idct_1x1`. The AC coefficients must still be
//! entropy-decoded to find where the next block starts, but only their lengths matter,
//! so they are skipped without being stored, dequantized or transformed. That makes the
//! scan about twice as fast as a general decoder at the same scale (`jpeg-decoder`
//! still stores every coefficient and hands each row to a worker thread), and a large
//! photo's thumbnail is mostly this scan.
//!
//! Only the common case is handled: baseline or extended sequential Huffman, 8-bit,
//! one interleaved scan, grayscale or YCbCr with chroma at most 2 × 2 subsampled.
//! Anything else is [`DcError::Unsupported`] and the caller uses the general decoder.
//! Input is hostile: every read is bounds-checked, a data stream that ends early is
//! [`DcError::Corrupt`], and work is bounded by the block count of the frame, which the
//! caller has already checked against its limits.

/// Why the DC path did not produce an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcError {
    /// Valid, perhaps, but not a case this decoder handles.
    Unsupported,
    Corrupt(String),
}

fn corrupt<T>(why: &str) -> Result<T, DcError> {
    Err(DcError::Corrupt(why.to_owned()))
}

/// The 1/8-scale picture: one pixel per 8 × 8 block of the full image.
pub struct Eighth {
    pub width: u32,
    pub height: u32,
    /// Grayscale (one byte a pixel) or RGB (three).
    pub gray: bool,
    pub pixels: Vec<u8>,
}

#[derive(Clone, Copy, Default)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
}

/// Decodes `bytes` at 1/8 scale, or says why not.
pub fn decode_eighth(bytes: &[u8]) -> Result<Eighth, DcError> {
    if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
        return corrupt("no start-of-image marker");
    }
    let mut at = 2;
    let mut quant = [None::<u16>; 4]; // Only the DC entry of each table is needed.
    let mut dc_tables: [Option<Box<Huffman>>; 4] = Default::default();
    let mut ac_tables: [Option<Box<Huffman>>; 4] = Default::default();
    let mut frame: Option<(usize, usize, Vec<Component>)> = None;
    let mut restart_interval = 0usize;
    let mut adobe_rgb = false;
    loop {
        // A marker, possibly after fill bytes.
        if bytes.get(at) != Some(&0xFF) {
            return corrupt("a marker was expected");
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else {
            return corrupt("the data ends before the image does");
        };
        at += 1;
        if marker == 0xD9 {
            return corrupt("the image ends before its pixels");
        }
        let Some(length) = bytes
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return corrupt("the data ends before the image does");
        };
        let Some(segment) = length
            .checked_sub(2)
            .and_then(|n| bytes.get(at + 2..at + 2 + n))
        else {
            return corrupt("a segment runs past the end of the data");
        };
        at += length;
        match marker {
            0xC0 | 0xC1 => {
                if frame.is_some() {
                    return Err(DcError::Unsupported);
                }
                frame = Some(parse_frame(segment)?);
            }
            // Progressive, lossless, hierarchical and arithmetic-coded frames.
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(DcError::Unsupported);
            }
            0xC4 => parse_huffman(segment, &mut dc_tables, &mut ac_tables)?,
            0xDB => parse_quant(segment, &mut quant)?,
            0xDD => {
                let Some(b) = segment.get(..2) else {
                    return corrupt("a short restart interval segment");
                };
                restart_interval = usize::from(u16::from_be_bytes([b[0], b[1]]));
            }
            // Adobe: transform 0 means the three components are RGB, not YCbCr.
            0xEE if segment.starts_with(b"Adobe") && segment.get(11) == Some(&0) => {
                adobe_rgb = true
            }
            0xDA => {
                let Some((width, height, components)) = frame else {
                    return corrupt("a scan comes before the frame header");
                };
                if adobe_rgb && components.len() == 3 {
                    return Err(DcError::Unsupported);
                }
                let scan = Scan::parse(segment, &components, &quant, &dc_tables, &ac_tables)?;
                return decode_scan(
                    &bytes[at.min(bytes.len())..],
                    width,
                    height,
                    &components,
                    scan,
                    restart_interval,
                );
            }
            _ => {} // APPn, COM, DNL before the scan, …: not needed.
        }
    }
}

fn parse_frame(segment: &[u8]) -> Result<(usize, usize, Vec<Component>), DcError> {
    let Some(head) = segment.get(..6) else {
        return corrupt("a short frame header");
    };
    if head[0] != 8 {
        return Err(DcError::Unsupported); // 12-bit samples
    }
    let height = usize::from(u16::from_be_bytes([head[1], head[2]]));
    let width = usize::from(u16::from_be_bytes([head[3], head[4]]));
    let count = usize::from(head[5]);
    if height == 0 || width == 0 {
        return Err(DcError::Unsupported); // 0 height: set later by a DNL marker
    }
    if count != 1 && count != 3 {
        return Err(DcError::Unsupported);
    }
    let Some(specs) = segment.get(6..6 + 3 * count) else {
        return corrupt("a short frame header");
    };
    let components: Vec<Component> = specs
        .chunks_exact(3)
        .map(|c| Component {
            id: c[0],
            h: usize::from(c[1] >> 4),
            v: usize::from(c[1] & 15),
            quant: usize::from(c[2]),
        })
        .collect();
    if components
        .iter()
        .any(|c| !(1..=4).contains(&c.h) || !(1..=4).contains(&c.v) || c.quant > 3)
    {
        return corrupt("a bad component in the frame header");
    }
    if count == 3 {
        // Luma 1 × 1, 2 × 1, 1 × 2 or 2 × 2; chroma 1 × 1.
        let (y, chroma) = (components[0], &components[1..]);
        if y.h > 2 || y.v > 2 || chroma.iter().any(|c| c.h != 1 || c.v != 1) {
            return Err(DcError::Unsupported);
        }
    }
    Ok((width, height, components))
}

fn parse_quant(mut segment: &[u8], quant: &mut [Option<u16>; 4]) -> Result<(), DcError> {
    while let Some(&pq_tq) = segment.first() {
        let (precision, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
        let size = if precision == 0 { 64 } else { 128 };
        let (Some(table), true) = (segment.get(1..1 + size), id < 4) else {
            return corrupt("a bad quantization table");
        };
        quant[id] = Some(if precision == 0 {
            u16::from(table[0])
        } else {
            u16::from_be_bytes([table[0], table[1]])
        });
        segment = &segment[1 + size..];
    }
    Ok(())
}

fn parse_huffman(
    mut segment: &[u8],
    dc: &mut [Option<Box<Huffman>>; 4],
    ac: &mut [Option<Box<Huffman>>; 4],
) -> Result<(), DcError> {
    while let Some(&tc_th) = segment.first() {
        let (class, id) = (tc_th >> 4, usize::from(tc_th & 15));
        let Some(counts) = segment.get(1..17) else {
            return corrupt("a short Huffman table");
        };
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let (Some(symbols), true) = (
            segment.get(17..17 + total),
            class <= 1 && id < 4 && total <= 256,
        ) else {
            return corrupt("a bad Huffman table");
        };
        let table = Box::new(Huffman::new(counts, symbols)?);
        if class == 0 {
            dc[id] = Some(table)
        } else {
            ac[id] = Some(table)
        }
        segment = &segment[17 + total..];
    }
    Ok(())
}

/// Bits looked up at once: most codes are shorter.
const FAST_BITS: u32 = 10;

/// A Huffman table: a direct look-up for codes of up to [`FAST_BITS`], and the
/// canonical-code limits (JPEG Annex C/F.2.2.3) for longer ones.
struct Huffman {
    /// By the next FAST_BITS bits: (code length, symbol); length 0 for a longer code.
    fast: [(u8, u8); 1 << FAST_BITS],
    /// For AC tables, by the same bits: how many bits the coefficient takes (code and
    /// value) in the low byte and how far it moves along the block (run + 1, 16 for a
    /// run of zeros, 64 for the end of the block) in the high byte; 0 for a longer code.
    skip: [u16; 1 << FAST_BITS],
    /// The largest code of each length (index 1..=16), -1 for none.
    max_code: [i32; 18],
    /// Symbol index minus first code, per length.
    offset: [i32; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8], symbols: &[u8]) -> Result<Self, DcError> {
        let mut table = Huffman {
            fast: [(0, 0); 1 << FAST_BITS],
            skip: [0; 1 << FAST_BITS],
            max_code: [-1; 18],
            offset: [0; 17],
            symbols: symbols.to_vec(),
        };
        table.max_code[17] = i32::MAX; // A sentinel: the search always ends.
        let mut code = 0u32;
        let mut k = 0usize;
        for length in 1..=16u32 {
            let count = usize::from(counts[length as usize - 1]);
            table.offset[length as usize] = k as i32 - code as i32;
            for _ in 0..count {
                if code >= 1 << length {
                    return corrupt("a Huffman table with too many codes");
                }
                if length <= FAST_BITS {
                    let shift = FAST_BITS - length;
                    let first = (code << shift) as usize;
                    let symbol = symbols[k];
                    let (run, size) = (u16::from(symbol >> 4), u16::from(symbol & 15));
                    let advance = match (run, size) {
                        (15, 0) => 16,
                        (_, 0) => 64,
                        _ => run + 1,
                    };
                    let skip = (advance << 8) | (length as u16 + size);
                    for entry in &mut table.fast[first..first + (1 << shift)] {
                        *entry = (length as u8, symbol);
                    }
                    table.skip[first..first + (1 << shift)].fill(skip);
                }
                code += 1;
                k += 1;
            }
            if count > 0 {
                table.max_code[length as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        Ok(table)
    }
}

/// The one scan, interleaving all components, with the tables each uses.
struct Scan<'t> {
    /// Per frame component, in scan order: (index into the frame's components, DC table,
    /// AC table, DC quantizer).
    order: Vec<(usize, &'t Huffman, &'t Huffman, i64)>,
}

impl<'t> Scan<'t> {
    fn parse(
        segment: &[u8],
        components: &[Component],
        quant: &[Option<u16>; 4],
        dc: &'t [Option<Box<Huffman>>; 4],
        ac: &'t [Option<Box<Huffman>>; 4],
    ) -> Result<Self, DcError> {
        let count = usize::from(*segment.first().unwrap_or(&0));
        if count != components.len() {
            return Err(DcError::Unsupported); // Components in separate scans.
        }
        let Some(specs) = segment.get(1..1 + 2 * count) else {
            return corrupt("a short scan header");
        };
        if segment.get(1 + 2 * count..4 + 2 * count) != Some(&[0, 63, 0]) {
            return Err(DcError::Unsupported); // Not a full sequential scan.
        }
        let mut order: Vec<(usize, &Huffman, &Huffman, i64)> = Vec::with_capacity(count);
        for spec in specs.chunks_exact(2) {
            let Some(index) = components.iter().position(|c| c.id == spec[0]) else {
                return corrupt("a scan names a component the frame lacks");
            };
            let (dc_id, ac_id) = (usize::from(spec[1] >> 4), usize::from(spec[1] & 15));
            let (Some(Some(dc)), Some(Some(ac))) = (dc.get(dc_id), ac.get(ac_id)) else {
                return corrupt("a scan uses a Huffman table that was not defined");
            };
            let Some(q) = quant[components[index].quant] else {
                return corrupt("a component uses a quantization table that was not defined");
            };
            if order.iter().any(|(i, ..)| *i == index) {
                return corrupt("a scan names a component twice");
            }
            order.push((index, &**dc, &**ac, i64::from(q)));
        }
        Ok(Scan { order })
    }
}

/// The entropy-coded data, read MSB first with byte stuffing (`FF 00`) undone. At a
/// marker, zeros are supplied (as libjpeg does); at the end of the data too, but that is
/// remembered: the image is then truncated.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
    /// Bits not yet used, left-aligned.
    acc: u64,
    count: u32,
    at_marker: bool,
    ran_out: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            at: 0,
            acc: 0,
            count: 0,
            at_marker: false,
            ran_out: false,
        }
    }

    #[inline]
    fn refill(&mut self) {
        if self.count > 56 {
            return;
        }
        // Fast: the next eight bytes hold no 0xFF (no stuffing, no marker).
        if !self.at_marker
            && let Some(chunk) = self.data.get(self.at..self.at + 8)
        {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let word = u64::from_be_bytes(word);
            let inverted = !word; // a zero byte here is an 0xFF there
            let has_ff =
                inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080
                    != 0;
            if !has_ff {
                let n = (64 - self.count) / 8; // whole bytes that fit (count ≤ 56: at least one)
                self.acc |= (word >> (64 - 8 * n)) << (64 - 8 * n - self.count);
                self.at += n as usize;
                self.count += 8 * n;
                return;
            }
        }
        while self.count <= 56 {
            let mut byte = 0u8;
            if !self.at_marker {
                match self.data.get(self.at) {
                    None => self.ran_out = true,
                    Some(&0xFF) => match self.data.get(self.at + 1) {
                        Some(0) => {
                            byte = 0xFF;
                            self.at += 2;
                        }
                        None => self.ran_out = true,
                        Some(_) => self.at_marker = true,
                    },
                    Some(&b) => {
                        byte = b;
                        self.at += 1;
                    }
                }
            }
            self.acc |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    /// The next symbol of `table` (at least 16 bits must be buffered).
    #[inline]
    fn symbol(&mut self, table: &Huffman) -> Result<u8, DcError> {
        let (length, symbol) = table.fast[(self.acc >> (64 - FAST_BITS)) as usize];
        if length > 0 {
            self.consume(u32::from(length));
            return Ok(symbol);
        }
        let mut length = FAST_BITS as usize + 1;
        let code = |length: usize| (self.acc >> (64 - length)) as i32;
        while code(length) > table.max_code[length] {
            length += 1;
        }
        if length > 16 {
            return corrupt("a bad Huffman code");
        }
        let index = table.offset[length] + code(length);
        let Some(&symbol) = usize::try_from(index)
            .ok()
            .and_then(|i| table.symbols.get(i))
        else {
            return corrupt("a bad Huffman code");
        };
        self.consume(length as u32);
        Ok(symbol)
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.count -= n;
    }

    /// `n` (≤ 16) bits as a signed JPEG magnitude (F.2.2.1 EXTEND).
    #[inline]
    fn extend(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        let value = (self.acc >> (64 - n)) as i32;
        self.consume(n);
        if value < 1 << (n - 1) {
            value - (1 << n) + 1
        } else {
            value
        }
    }

    /// After a restart interval: drop the rest of the byte and step over the `RSTn`.
    fn restart(&mut self) -> Result<(), DcError> {
        self.acc = 0;
        self.count = 0;
        self.at_marker = false;
        match self.data.get(self.at..self.at + 2) {
            Some([0xFF, 0xD0..=0xD7]) => {
                self.at += 2;
                Ok(())
            }
            None => {
                self.ran_out = true;
                Ok(())
            }
            _ => corrupt("a restart marker is missing"),
        }
    }
}

fn decode_scan(
    data: &[u8],
    width: usize,
    height: usize,
    components: &[Component],
    scan: Scan<'_>,
    restart_interval: usize,
) -> Result<Eighth, DcError> {
    let gray = components.len() == 1;
    // A single component is never interleaved: its blocks cover just the image.
    let (h_max, v_max) = if gray {
        (1, 1)
    } else {
        (
            components.iter().map(|c| c.h).max().unwrap_or(1),
            components.iter().map(|c| c.v).max().unwrap_or(1),
        )
    };
    let blocks = |c: &Component| if gray { (1, 1) } else { (c.h, c.v) };
    let mcus_x = width.div_ceil(8 * h_max);
    let mcus_y = height.div_ceil(8 * v_max);
    // One byte per block of each component: its DC, dequantized and level-shifted.
    let mut planes: Vec<Vec<u8>> = components
        .iter()
        .map(|c| vec![0u8; mcus_x * blocks(c).0 * mcus_y * blocks(c).1])
        .collect();
    let stride: Vec<usize> = components.iter().map(|c| mcus_x * blocks(c).0).collect();
    // Wrapping (as libjpeg's int does), so hostile differences cannot overflow.
    let mut predictions = vec![0i32; components.len()];
    let mut bits = Bits::new(data);
    let total = mcus_x * mcus_y;
    for mcu in 0..total {
        if bits.ran_out {
            break; // Truncated: no need to decode zeros to the end.
        }
        if restart_interval > 0 && mcu > 0 && mcu % restart_interval == 0 {
            bits.restart()?;
            predictions.fill(0);
        }
        let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
        for &(index, dc, ac, q) in &scan.order {
            let (bh, bv) = blocks(&components[index]);
            for by in 0..bv {
                for bx in 0..bh {
                    bits.refill();
                    let size = bits.symbol(dc)?;
                    if size > 11 {
                        return corrupt("a bad DC difference");
                    }
                    bits.refill();
                    predictions[index] =
                        predictions[index].wrapping_add(bits.extend(u32::from(size)));
                    let prediction = i64::from(predictions[index]);
                    // Skip the 63 AC coefficients: only their lengths matter here.
                    let mut k = 1;
                    while k < 64 {
                        if bits.count < 32 {
                            bits.refill();
                        }
                        let skip = ac.skip[(bits.acc >> (64 - FAST_BITS)) as usize];
                        if skip != 0 {
                            bits.consume(u32::from(skip & 0xFF));
                            k += usize::from(skip >> 8);
                            continue;
                        }
                        let rs = bits.symbol(ac)?;
                        let (run, size) = (rs >> 4, u32::from(rs & 15));
                        if size == 0 {
                            if run != 15 {
                                break; // End of block.
                            }
                            k += 16;
                        } else {
                            bits.consume(size);
                            k += usize::from(run) + 1;
                        }
                    }
                    // libjpeg's 1 × 1 IDCT: (DC × q + 4) >> 3, level-shifted.
                    let value = ((prediction * q + 4) >> 3) + 128;
                    let (x, y) = (mx * bh + bx, my * bv + by);
                    if let Some(cell) = planes[index].get_mut(y * stride[index] + x) {
                        *cell = value.clamp(0, 255) as u8;
                    }
                }
            }
        }
    }
    if bits.ran_out {
        return corrupt("the data ends before the image does");
    }
    let (out_w, out_h) = (width.div_ceil(8), height.div_ceil(8));
    let pixels = if gray {
        let mut pixels = Vec::with_capacity(out_w * out_h);
        for y in 0..out_h {
            pixels.extend_from_slice(&planes[0][y * stride[0]..y * stride[0] + out_w]);
        }
        pixels
    } else {
        let mut pixels = Vec::with_capacity(out_w * out_h * 3);
        let (luma, cb, cr) = (&planes[0], &planes[1], &planes[2]);
        let (hy, vy) = (components[0].h, components[0].v);
        for y in 0..out_h {
            let (ly, cy) = (y * vy / v_max, y / v_max);
            for x in 0..out_w {
                let (lx, cx) = (x * hy / h_max, x / h_max);
                let l = i32::from(luma[ly * stride[0] + lx]);
                let b = i32::from(cb[cy * stride[1] + cx]) - 128;
                let r = i32::from(cr[cy * stride[2] + cx]) - 128;
                // JFIF YCbCr → RGB in 16.16 fixed point.
                let red = l + ((91_881 * r + 32_768) >> 16);
                let green = l - ((22_554 * b + 46_802 * r - 32_768) >> 16);
                let blue = l + ((116_130 * b + 32_768) >> 16);
                pixels.extend([red, green, blue].map(|c| c.clamp(0, 255) as u8));
            }
        }
        pixels
    };
    Ok(Eighth {
        width: out_w as u32,
        height: out_h as u32,
        gray,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use image::{DynamicImage, GrayImage, ImageFormat, Rgb, RgbImage};

    use super::*;

    fn encode(image: DynamicImage) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut bytes, ImageFormat::Jpeg)
            .expect("encode");
        bytes.into_inner()
    }

    fn textured(width: u32, height: u32) -> RgbImage {
        let mut noise = 0x2545_F491u32;
        RgbImage::from_fn(width, height, |x, y| {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let n = (noise % 40) as u8;
            Rgb([
                (x * 7 % 200) as u8 + n,
                (y * 3 % 200) as u8 + n,
                ((x + y) % 180) as u8 + n,
            ])
        })
    }

    /// `jpeg-decoder` at its 1/8 scale, the reference.
    fn reference(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        decoder.read_info().expect("info");
        let info = decoder.info().expect("info");
        decoder
            .scale(info.width.div_ceil(8), info.height.div_ceil(8))
            .expect("scale");
        let pixels = decoder.decode().expect("decode");
        let info = decoder.info().expect("info");
        (u32::from(info.width), u32::from(info.height), pixels)
    }

    #[test]
    fn grayscale_matches_the_general_decoder_exactly() {
        for (w, h) in [(64, 64), (333, 77), (8, 8), (1, 1), (1030, 9)] {
            let gray = DynamicImage::ImageRgb8(textured(w, h)).to_luma8();
            let bytes = encode(DynamicImage::ImageLuma8(gray));
            let ours = decode_eighth(&bytes).unwrap_or_else(|e| panic!("{w}×{h}: {e:?}"));
            let (rw, rh, expected) = reference(&bytes);
            assert!(ours.gray);
            assert_eq!((ours.width, ours.height), (rw, rh), "{w}×{h}");
            let worst = ours
                .pixels
                .iter()
                .zip(&expected)
                .map(|(a, b)| a.abs_diff(*b))
                .max();
            assert!(worst <= Some(1), "{w}×{h}: off by {worst:?}");
        }
    }

    #[test]
    fn colour_matches_the_general_decoder_closely() {
        for (w, h) in [(640, 480), (333, 77), (17, 9)] {
            let bytes = encode(DynamicImage::ImageRgb8(textured(w, h)));
            let ours = decode_eighth(&bytes).unwrap_or_else(|e| panic!("{w}×{h}: {e:?}"));
            let (rw, rh, expected) = reference(&bytes);
            assert!(!ours.gray);
            assert_eq!((ours.width, ours.height), (rw, rh));
            assert_eq!(ours.pixels.len(), expected.len());
            // Chroma is replicated here and interpolated there: close, not equal.
            let total: u64 = ours
                .pixels
                .iter()
                .zip(&expected)
                .map(|(a, b)| u64::from(a.abs_diff(*b)))
                .sum();
            let mean = total as f64 / expected.len() as f64;
            assert!(mean < 4.0, "{w}×{h}: mean difference {mean}");
        }
    }

    /// A minimal encoder of flat 8 × 8 blocks (DC only), grayscale, with restart markers
    /// every `interval` blocks: what no encoder at hand writes.
    fn flat_blocks_with_restarts(levels: &[Vec<u8>], interval: u16) -> Vec<u8> {
        let (bw, bh) = (levels[0].len(), levels.len());
        let mut out = vec![0xFF, 0xD8];
        let mut segment = |marker: u8, body: &[u8]| {
            out.extend([0xFF, marker]);
            out.extend(((body.len() + 2) as u16).to_be_bytes());
            out.extend_from_slice(body);
        };
        segment(0xDB, &[[0u8].as_slice(), &[1; 64]].concat()); // q = 1 everywhere
        let mut sof = vec![8];
        sof.extend(((bh * 8) as u16).to_be_bytes());
        sof.extend(((bw * 8) as u16).to_be_bytes());
        sof.extend([1, 1, 0x11, 0]);
        segment(0xC0, &sof);
        // DC: categories 0..=11 with the standard luminance code lengths.
        let dc_counts = [0u8, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
        segment(
            0xC4,
            &[
                [0x00u8].as_slice(),
                &dc_counts,
                &(0..12).collect::<Vec<u8>>(),
            ]
            .concat(),
        );
        // AC: end-of-block only, code "0".
        let mut ac_counts = [0u8; 16];
        ac_counts[0] = 1;
        segment(0xC4, &[[0x10u8].as_slice(), &ac_counts, &[0x00]].concat());
        segment(0xDD, &interval.to_be_bytes());
        segment(0xDA, &[1, 1, 0x00, 0, 63, 0]);
        // Standard DC luminance codes, by category.
        let dc_codes: [(u32, u32); 12] = [
            (0b00, 2),
            (0b010, 3),
            (0b011, 3),
            (0b100, 3),
            (0b101, 3),
            (0b110, 3),
            (0b1110, 4),
            (0b11110, 5),
            (0b111110, 6),
            (0b1111110, 7),
            (0b11111110, 8),
            (0b111111110, 9),
        ];
        let (mut acc, mut n, mut prediction, mut data) = (0u64, 0u32, 0i32, Vec::new());
        let put = |acc: &mut u64, n: &mut u32, value: u32, bits: u32, data: &mut Vec<u8>| {
            *acc = (*acc << bits) | u64::from(value);
            *n += bits;
            while *n >= 8 {
                let byte = (*acc >> (*n - 8)) as u8;
                data.push(byte);
                if byte == 0xFF {
                    data.push(0);
                }
                *n -= 8;
            }
        };
        for (i, level) in levels.iter().flatten().enumerate() {
            if interval > 0 && i > 0 && i % usize::from(interval) == 0 {
                if n > 0 {
                    let pad = 8 - n;
                    put(&mut acc, &mut n, (1 << pad) - 1, pad, &mut data);
                }
                data.extend([0xFF, 0xD0 + ((i / usize::from(interval) - 1) % 8) as u8]);
                prediction = 0;
            }
            let dc = (i32::from(*level) - 128) * 8; // 1 × 1 IDCT: DC / 8 + 128
            let diff = dc - prediction;
            prediction = dc;
            let category = 32 - diff.unsigned_abs().leading_zeros();
            let (code, length) = dc_codes[category as usize];
            put(&mut acc, &mut n, code, length, &mut data);
            if category > 0 {
                let bits = if diff < 0 {
                    (diff - 1) as u32 & ((1 << category) - 1)
                } else {
                    diff as u32
                };
                put(&mut acc, &mut n, bits, category, &mut data);
            }
            put(&mut acc, &mut n, 0, 1, &mut data); // end of block
        }
        if n > 0 {
            let pad = 8 - n;
            put(&mut acc, &mut n, (1 << pad) - 1, pad, &mut data);
        }
        out.extend(data);
        out.extend([0xFF, 0xD9]);
        out
    }

    #[test]
    fn restart_intervals_are_followed() {
        let levels: Vec<Vec<u8>> = (0..5)
            .map(|y| (0..7).map(|x| (x * 30 + y * 11) as u8).collect())
            .collect();
        for interval in [0, 1, 3, 7, 50] {
            let bytes = flat_blocks_with_restarts(&levels, interval);
            let (rw, rh, expected) = reference(&bytes);
            assert_eq!((rw, rh), (7, 5));
            assert_eq!(
                expected,
                levels.concat(),
                "the reference reads the crafted file"
            );
            let ours =
                decode_eighth(&bytes).unwrap_or_else(|e| panic!("interval {interval}: {e:?}"));
            assert_eq!(ours.pixels, levels.concat(), "interval {interval}");
        }
        // A restart marker that is not there.
        let mut broken = flat_blocks_with_restarts(&levels, 3);
        let rst = broken
            .windows(2)
            .position(|w| w == [0xFF, 0xD0])
            .expect("a restart marker");
        broken[rst + 1] = 0x00; // now stuffed data, not a marker
        assert!(decode_eighth(&broken).is_err());
    }

    #[test]
    fn unsupported_layouts_are_left_to_the_general_decoder() {
        let mut bytes = encode(DynamicImage::ImageRgb8(textured(64, 64)));
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        bytes[sof + 1] = 0xC2; // declared progressive
        assert_eq!(decode_eighth(&bytes).err(), Some(DcError::Unsupported));
        bytes[sof + 1] = 0xC9; // arithmetic coding
        assert_eq!(decode_eighth(&bytes).err(), Some(DcError::Unsupported));
        // Adobe's marker saying the components are RGB, not YCbCr.
        let plain = encode(DynamicImage::ImageRgb8(textured(64, 64)));
        assert!(decode_eighth(&plain).is_ok());
        let adobe = [&[0xFF, 0xEE, 0, 14][..], b"Adobe", &[0, 100, 0, 0, 0, 0, 0]].concat();
        let rgb = [&plain[..2], &adobe, &plain[2..]].concat();
        assert_eq!(decode_eighth(&rgb).err(), Some(DcError::Unsupported));
    }

    #[test]
    fn truncated_and_garbled_data_is_an_error_never_a_panic() {
        let whole = encode(DynamicImage::ImageRgb8(textured(200, 120)));
        for cut in (0..whole.len())
            .step_by(97)
            .chain([whole.len() - 2, whole.len() - 1])
        {
            assert!(
                decode_eighth(&whole[..cut]).is_err(),
                "cut at {cut} of {}",
                whole.len()
            );
        }
        let mut state = 0x9E37_79B9u32;
        for _ in 0..300 {
            let mut garbled = whole.clone();
            for _ in 0..6 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let at = state as usize % garbled.len();
                garbled[at] = (state >> 8) as u8;
            }
            let _ = decode_eighth(&garbled); // Any answer but a panic.
        }
        assert!(decode_eighth(&[]).is_err());
        assert!(decode_eighth(&[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
        let gray = encode(DynamicImage::ImageLuma8(GrayImage::from_pixel(
            16,
            16,
            image::Luma([7]),
        )));
        assert!(decode_eighth(&gray).is_ok());
    }
}
