//! Postgres-like 8 KiB heap pages for the sample workdir: drawing a page, and updating rows of a
//! page in place.
//!
//! Owns the page byte layout as far as the sample needs it to look and compress like the real
//! thing: `PageHeaderData`, the line-pointer array, heap tuples (`HeapTupleHeaderData` plus a row
//! of a fixed table) growing down from the end, zeroed free space, a page checksum. Knows nothing
//! of layer files or workdirs.
//!
//! The table every page holds: `id int8, created_at timestamptz, account int4, status int2,
//! flags int2, token uuid, note text` (the note is words from a fixed list, a short varlena).

use super::rng::SampleRng;
use crate::id::Lsn;

/// Size of a page (Postgres `BLCKSZ`).
pub const PAGE_SIZE: usize = 8192;

/// `PageHeaderData` size.
const PAGE_HEADER: usize = 24;
/// `ItemIdData` size.
const LINE_POINTER: usize = 4;
/// `HeapTupleHeaderData` (23 bytes) padded to `MAXALIGN`; also `t_hoff`.
const TUPLE_HEADER: usize = 24;
/// Offset of the note's varlena header in a tuple; the fixed-width columns come before it.
const NOTE_OFFSET: usize = 64;
/// Longest note in bytes: a one-byte varlena header holds at most 127 bytes in all.
const MAX_NOTE: usize = 120;
/// Longest tuple this table produces.
pub(crate) const MAX_TUPLE: usize = NOTE_OFFSET + 1 + MAX_NOTE;
/// `PG_PAGE_LAYOUT_VERSION`.
const LAYOUT_VERSION: u16 = 4;
/// `LP_NORMAL` line-pointer flag.
const LP_NORMAL: u32 = 1;
/// `PD_ALL_VISIBLE` page flag.
const PD_ALL_VISIBLE: u16 = 0x0004;
/// `t_infomask` bits used: has a varlena column, inserter committed, no deleter, is an update.
const HEAP_HASVARWIDTH: u16 = 0x0002;
const HEAP_XMIN_COMMITTED: u16 = 0x0100;
const HEAP_XMAX_INVALID: u16 = 0x0800;
const HEAP_UPDATED: u16 = 0x2000;
/// Number of columns of the table (`t_infomask2`).
const NATTS: u16 = 7;
/// Offsets of fields inside a tuple that updates rewrite.
const T_XMIN: usize = 0;
const T_INFOMASK: usize = 20;
const COL_CREATED_AT: usize = 32;
const COL_ACCOUNT: usize = 40;
const COL_STATUS: usize = 44;
/// Offsets inside the page header.
const PD_CHECKSUM: usize = 8;
const PD_FLAGS: usize = 10;
const PD_LOWER: usize = 12;

/// Words the notes are made of.
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "order",
    "customer",
    "account",
    "payment",
    "invoice",
    "shipped",
    "pending",
    "refund",
    "delivery",
    "address",
    "street",
    "city",
    "north",
    "south",
    "east",
    "west",
    "blue",
    "green",
    "red",
    "small",
    "large",
    "express",
    "standard",
    "priority",
    "note",
    "call",
    "email",
    "request",
    "approved",
    "declined",
    "review",
    "warehouse",
    "item",
    "product",
    "quantity",
    "discount",
    "coupon",
    "gift",
    "return",
    "damaged",
    "replaced",
    "support",
    "ticket",
    "closed",
    "open",
    "urgent",
    "monday",
    "friday",
    "january",
    "march",
    "october",
    "morning",
    "evening",
    "online",
    "store",
    "mobile",
    "credit",
    "card",
    "transfer",
    "balance",
    "monthly",
    "annual",
    "plan",
    "upgrade",
    "cancel",
    "renewal",
    "trial",
    "premium",
    "basic",
    "team",
    "user",
    "admin",
    "login",
    "failed",
    "success",
    "retry",
    "batch",
    "import",
    "export",
    "report",
    "weekly",
    "summary",
    "draft",
    "final",
    "copy",
    "paper",
];

/// Where a page sits and what its rows hold; everything else is drawn from the generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageContext {
    /// LSN of the last change to the page (`pd_lsn`).
    pub lsn: Lsn,
    /// Block number in the relation; goes into each tuple's `t_ctid` and the checksum.
    pub block: u32,
    /// `id` of the first row; the following rows count up from it.
    pub first_row_id: u64,
    /// Transaction that inserted the first row; later rows have slightly later ones.
    pub xmin: u32,
    /// `created_at` of the first row, in Postgres microseconds (since 2000-01-01).
    pub timestamp_us: i64,
}

/// A heap page of the sample table: as many rows as fit (or, for about one page in six, fewer),
/// free space zeroed, checksum set.
pub fn postgres_page(rng: &mut SampleRng, ctx: &PageContext) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    let floor = fill_floor(rng);
    let mut tuple = [0u8; MAX_TUPLE];
    let (mut upper, mut items) = (PAGE_SIZE, 0u16);
    loop {
        let len = heap_tuple(rng, ctx, items + 1, &mut tuple);
        let start = (upper - len) & !7;
        let lower = PAGE_HEADER + (usize::from(items) + 1) * LINE_POINTER;
        if start < lower.max(floor) {
            break;
        }
        page[start..start + len].copy_from_slice(&tuple[..len]);
        put_u32(&mut page, lower - LINE_POINTER, line_pointer(start, len));
        (upper, items) = (start, items + 1);
    }
    let flags = if rng.chance(0.7) { PD_ALL_VISIBLE } else { 0 };
    write_header(&mut page, ctx.lsn, items, upper, flags);
    set_checksum(&mut page, ctx.block);
    page
}

/// Updates one to three rows of `page` in place, as transaction `xid` at `lsn`: new `xmin`,
/// account, status and time; then the page LSN, flags and checksum. A page without rows only gets
/// the new LSN.
pub fn update_rows(rng: &mut SampleRng, page: &mut [u8; PAGE_SIZE], lsn: Lsn, xid: u32) {
    let items = (usize::from(get_u16(page, PD_LOWER)).saturating_sub(PAGE_HEADER)) / LINE_POINTER;
    let mut block = 0;
    for _ in 0..(items.min(1 + rng.below(3) as usize)) {
        let item = rng.below(items as u64) as usize;
        let off = (get_u32(page, PAGE_HEADER + item * LINE_POINTER) & 0x7fff) as usize;
        block = get_u32(page, off + 12).rotate_left(16);
        update_tuple(rng, &mut page[off..off + NOTE_OFFSET], xid);
    }
    put_u32(page, 0, (lsn.0 >> 32) as u32);
    put_u32(page, 4, lsn.0 as u32);
    let flags = get_u16(page, PD_FLAGS) & !PD_ALL_VISIBLE;
    put_u16(page, PD_FLAGS, flags);
    set_checksum(page, block);
}

/// Rewrites the columns an update touches in one tuple.
fn update_tuple(rng: &mut SampleRng, tuple: &mut [u8], xid: u32) {
    put_u32(tuple, T_XMIN, xid);
    let infomask = get_u16(tuple, T_INFOMASK) | HEAP_UPDATED;
    put_u16(tuple, T_INFOMASK, infomask);
    let created = i64::from_le_bytes(
        tuple[COL_CREATED_AT..COL_CREATED_AT + 8]
            .try_into()
            .unwrap(),
    );
    let created = created + rng.range(1_000_000..86_400_000_000) as i64;
    tuple[COL_CREATED_AT..COL_CREATED_AT + 8].copy_from_slice(&created.to_le_bytes());
    put_u32(tuple, COL_ACCOUNT, rng.below(50_000) as u32);
    put_u16(tuple, COL_STATUS, rng.below(5) as u16);
}

/// Lowest offset tuples may reach: most pages are full, some hold only 20-90% rows.
fn fill_floor(rng: &mut SampleRng) -> usize {
    if rng.chance(0.85) {
        return 0;
    }
    let used = rng.range(PAGE_SIZE as u64 / 5..PAGE_SIZE as u64 * 9 / 10) as usize;
    PAGE_SIZE - used
}

/// Writes tuple number `item` (1-based, its line pointer's number) of the page `ctx` into `out`;
/// returns its length.
pub(crate) fn heap_tuple(
    rng: &mut SampleRng,
    ctx: &PageContext,
    item: u16,
    out: &mut [u8; MAX_TUPLE],
) -> usize {
    let seq = u64::from(item - 1);
    write_tuple_header(out, ctx.xmin + (seq / 4) as u32, ctx.block, item);
    out[24..32].copy_from_slice(&(ctx.first_row_id + seq).to_le_bytes());
    let created = ctx.timestamp_us + (seq * 1_500_000 + rng.below(1_000_000)) as i64;
    out[32..40].copy_from_slice(&created.to_le_bytes());
    put_u32(out, COL_ACCOUNT, rng.below(50_000) as u32);
    put_u16(out, COL_STATUS, rng.below(5) as u16);
    put_u16(out, 46, 0);
    write_token(rng, ctx, &mut out[48..NOTE_OFFSET]);
    let note = write_note(rng, &mut out[NOTE_OFFSET + 1..]);
    out[NOTE_OFFSET] = (((note + 1) << 1) | 1) as u8;
    NOTE_OFFSET + 1 + note
}

/// The `token` uuid: fresh random bytes for two rows in five, else one of four values shared by
/// the rows of the page (the same few sessions write many rows).
fn write_token(rng: &mut SampleRng, ctx: &PageContext, out: &mut [u8]) {
    if rng.chance(0.4) {
        return rng.fill(out);
    }
    let session = ctx.first_row_id.wrapping_mul(4).wrapping_add(rng.below(4));
    out.copy_from_slice(&SampleRng::new(session).next_u128().to_le_bytes());
}

/// `HeapTupleHeaderData`: xmin, xmax 0, cid 0, ctid (block, item), natts, infomask, hoff.
fn write_tuple_header(out: &mut [u8], xmin: u32, block: u32, item: u16) {
    put_u32(out, 0, xmin);
    put_u32(out, 4, 0);
    put_u32(out, 8, 0);
    put_u32(out, 12, block.rotate_left(16));
    put_u16(out, 16, item);
    put_u16(out, 18, NATTS);
    let infomask = HEAP_HASVARWIDTH | HEAP_XMIN_COMMITTED | HEAP_XMAX_INVALID;
    put_u16(out, T_INFOMASK, infomask);
    out[22] = TUPLE_HEADER as u8;
    out[23] = 0;
}

/// Words separated by spaces: usually one to four, sometimes a sentence. Returns the length.
fn write_note(rng: &mut SampleRng, out: &mut [u8]) -> usize {
    let words = if rng.chance(0.9) {
        rng.range(1..5)
    } else {
        rng.range(6..17)
    };
    let mut len = 0;
    for i in 0..words {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes();
        let sep = usize::from(i > 0);
        if len + sep + word.len() > MAX_NOTE {
            break;
        }
        if sep == 1 {
            out[len] = b' ';
        }
        out[len + sep..len + sep + word.len()].copy_from_slice(word);
        len += sep + word.len();
    }
    len
}

/// `ItemIdData`: `lp_off:15, lp_flags:2, lp_len:15`.
fn line_pointer(off: usize, len: usize) -> u32 {
    off as u32 | (LP_NORMAL << 15) | ((len as u32) << 17)
}

/// `PageHeaderData` with the checksum left zero.
fn write_header(page: &mut [u8; PAGE_SIZE], lsn: Lsn, items: u16, upper: usize, flags: u16) {
    put_u32(page, 0, (lsn.0 >> 32) as u32);
    put_u32(page, 4, lsn.0 as u32);
    put_u16(page, PD_FLAGS, flags);
    put_u16(
        page,
        PD_LOWER,
        (PAGE_HEADER + usize::from(items) * LINE_POINTER) as u16,
    );
    put_u16(page, 14, upper as u16);
    put_u16(page, 16, PAGE_SIZE as u16);
    put_u16(page, 18, PAGE_SIZE as u16 | LAYOUT_VERSION);
    put_u32(page, 20, 0);
}

/// Sets `pd_checksum`: an FNV-style hash of the page (checksum field zero) and its block number,
/// folded into 1..=65535 as Postgres does.
fn set_checksum(page: &mut [u8; PAGE_SIZE], block: u32) {
    put_u16(page, PD_CHECKSUM, 0);
    let mut h = 0xCBF2_9CE4_8422_2325 ^ u64::from(block);
    for word in page.chunks_exact(8) {
        h = (h ^ u64::from_le_bytes(word.try_into().unwrap())).wrapping_mul(0x0100_0000_01B3);
    }
    let folded = (h ^ (h >> 32)) as u32;
    put_u16(page, PD_CHECKSUM, (folded % 65535 + 1) as u16);
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(block: u32) -> PageContext {
        PageContext {
            lsn: Lsn(0x16_B374_D848 + u64::from(block) * 64),
            block,
            first_row_id: 1 + u64::from(block) * 128,
            xmin: 1000 + block * 20,
            timestamp_us: 760_000_000_000_000 + i64::from(block) * 120_000_000,
        }
    }

    /// The header, line pointers and tuples are consistent: pd_lower/pd_upper bound the free
    /// space, which is zero, and every line pointer names a tuple of this block.
    #[test]
    fn page_layout_is_consistent() {
        let mut rng = SampleRng::new(1);
        for block in 0..50 {
            let page = postgres_page(&mut rng, &ctx(block));
            let (lower, upper) = (get_u16(&page, 12) as usize, get_u16(&page, 14) as usize);
            assert!(PAGE_HEADER < lower && lower <= upper && upper < PAGE_SIZE);
            assert!(page[lower..upper].iter().all(|&b| b == 0));
            assert_eq!(get_u16(&page, 18), 8192 | 4);
            for i in 0..(lower - PAGE_HEADER) / 4 {
                let lp = get_u32(&page, PAGE_HEADER + 4 * i);
                let (off, len) = ((lp & 0x7fff) as usize, (lp >> 17) as usize);
                assert!(off >= upper && off + len <= PAGE_SIZE);
                assert_eq!(get_u32(&page, off + 12).rotate_left(16), block);
                assert_eq!(get_u16(&page, off + 16) as usize, i + 1);
            }
        }
    }

    /// zstd level 3 compresses a run of pages between 2x and 4x, like real heap data.
    #[test]
    fn pages_compress_like_heap_data() {
        let mut rng = SampleRng::new(2);
        let data: Vec<u8> = (0..256)
            .flat_map(|b| postgres_page(&mut rng, &ctx(b)))
            .collect();
        let ratio = data.len() as f64 / zstd::bulk::compress(&data, 3).unwrap().len() as f64;
        assert!((2.0..=4.0).contains(&ratio), "zstd ratio {ratio:.2}");
    }

    /// An update changes the page (LSN, a row, the checksum) but leaves most bytes alone.
    #[test]
    fn update_changes_few_bytes() {
        let mut rng = SampleRng::new(3);
        let old = postgres_page(&mut rng, &ctx(9));
        let mut new = old;
        update_rows(&mut rng, &mut new, Lsn(0x17_0000_0000), 5000);
        let differing = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        assert!((4..100).contains(&differing), "{differing} bytes differ");
        assert_eq!(get_u32(&new, 0), 0x17);
    }
}
