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
