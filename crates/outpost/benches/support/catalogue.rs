//! The vocabulary of the benchmarks' catalogue items, shared so that every benchmark's data
//! reads alike (names drawn from real medicines, not repeated filler that flatters compression).

/// Medicines an item's name is drawn from.
pub const DRUGS: [&str; 16] = [
    "Amoxicillin",
    "Paracetamol",
    "Metformin",
    "Artemether/Lumefantrine",
    "Oxytocin",
    "Ceftriaxone",
    "Zinc sulfate",
    "Oral rehydration salts",
    "Cotrimoxazole",
    "Ibuprofen",
    "Salbutamol",
    "Magnesium sulfate",
    "Gentamicin",
    "Ferrous sulfate",
    "Nevirapine",
    "Doxycycline",
];

/// Forms an item comes in.
pub const FORMS: [&str; 8] =
    ["tablets", "capsules", "oral suspension", "injection", "vials", "sachets", "syrup", "inhaler"];

/// An item as a real catalogue has them: a random 32-hex-digit id (as mSupply's), names drawn
/// from a vocabulary, varied numbers, so that compression is not flattered by repetition.
#[allow(dead_code)] // not every benchmark draws whole items
pub fn item(i: usize) -> (String, String) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let id = format!("{:016x}{:016x}", rng.next(), rng.next());
    let strength = 5 * (1 + rng.below(100));
    let pack = [1, 10, 20, 28, 30, 50, 100, 500][rng.below(8) as usize];
    let doc = serde_json::json!({
        "code": format!("{}{:05}", (b'A' + rng.below(26) as u8) as char, rng.below(100_000)),
        "name": format!("{} {strength} mg {}, pack of {pack}", DRUGS[rng.below(16) as usize], FORMS[rng.below(8) as usize]),
        "unit_id": format!("unit-{:02}", rng.below(40)),
        "category_id": format!("category-{:03}", rng.below(300)),
        "default_pack_size": pack,
        "atc_code": format!("{}{:02}{}{}{:02}", (b'A' + rng.below(14) as u8) as char, rng.below(99), (b'A' + rng.below(26) as u8) as char, (b'A' + rng.below(26) as u8) as char, rng.below(99)),
        "is_vaccine": rng.below(20) == 0,
        "cold_chain": rng.below(15) == 0,
        "price_per_unit": rng.below(1_000_000) as f64 / 1000.0,
        "weight_grams": ([0.0, 5.0, 12.5, 50.0, 100.0, 250.0][rng.below(6) as usize]),
        "volume_per_pack_litres": ([0.0, 0.001, 0.01, 0.1, 0.5][rng.below(5) as usize]),
        "note": if rng.below(4) == 0 { "essential medicines list 2026" } else { "" },
    })
    .to_string();
    (id, doc)
}

/// xorshift64*: deterministic, dependency-free variety for benchmark data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
