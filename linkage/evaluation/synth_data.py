"""Name, street and place lists for :mod:`linkage.evaluation.synth` (invented people, real-looking NZ data).

Weights are relative frequencies; they follow a Zipf-like fall-off within each list.
"""

from __future__ import annotations

FEMALE_NAMES = (
    "Olivia Charlotte Isla Amelia Ava Mia Harper Willow Sophie Grace Ruby Emily Lily Ella Zoe Chloe "
    "Aroha Mere Anahera Kiri Ngaire Hana Tūī Manaia Kahurangi Marama Moana Aria Ataahua Hinemoa "
    "Sina Losa Mele Salote Fetu Lagi Malia Ana Sieni Talia "
    "Mei Xin Yan Li Na Priya Ananya Divya Aisha Fatima Zainab Mariam Amina Hodan Fadumo Ayaan "
    "Khadija Farida Nargis Zahra Shirin Paw Naw Htoo Eh Moo Lucia Valentina Camila Daniela Gabriela "
    "Elizabeth Katherine Margaret Jennifer Susan Deborah Patricia Barbara Jessica Rebecca Samantha "
    "Hannah Sarah Rachel Michelle Nicole Stephanie Kimberley Tania Leanne Kirsty Shona Julie Karen"
).split()
MALE_NAMES = (
    "Oliver Jack Noah Leo George Lucas Charlie William James Thomas Henry Hunter Mason Luca Theodore "
    "Wiremu Hemi Tama Rawiri Nikau Tane Manaaki Ihaia Hohepa Rangi Mikaere Tipene Kahu Anaru Matiu "
    "Sione Tevita Viliami Semisi Losaline Iosefa Falani Ioane Pita Malakai "
    "Wei Jun Hao Ming Raj Arjun Rohan Vikram Mohammed Ahmed Ali Omar Hassan Abdi Abdullahi Mustafa "
    "Yusuf Farid Ahmad Karim Saw Kyaw Htoo Eh Juan Carlos Andres Luis Diego "
    "Robert Michael David Richard Joseph Daniel Matthew Anthony Christopher Andrew Steven Paul "
    "Benjamin Samuel Joshua Nathan Peter Mark Stephen Craig Shane Wayne Brett Darren"
).split()
SURNAMES = (
    "Smith Williams Brown Wilson Taylor Jones Singh Walker Thompson Anderson White Harris Martin "
    "Clark Young King Lee Wright Scott Green Baker Hall Campbell Mitchell Roberts Turner Phillips "
    "Parata Tipene Ngata Walker Rangihau Tawhiri Karaka Paewai Tamihana Wihongi Te_Awa Te_Whata "
    "Te_Rangi Ruatapu Herewini Kereama Puketapu Mahuika "
    "Faleolo Tuilagi Leota Fonoti Taufa Fifita Vaipulu Havili Tupou Lolohea Schuster Aumua "
    "Wang Li Zhang Chen Liu Patel Sharma Kumar Reddy Nair Gupta "
    "Al-Hassan Al-Rashid Haddad Mansour Khalil Nasser Abdullahi Mohamud Farah Warsame Hussein Osman "
    "Ahmadi Rahimi Karimi Hashimi Noori Htoo Paw Moo Tun Aung Oo Rodríguez García Martínez López "
    "Hernández González Ramírez O'Brien O'Connor McDonald MacKenzie Van_der_Berg De_Silva "
    "Fitzgerald Henderson Morrison Gallagher Robertson Sutherland Fraser Stewart Murray Reid"
).split()
SURNAMES = [name.replace("_", " ") for name in SURNAMES]
NICKNAMES = {
    "William": ("Bill", "Will", "Liam"),
    "Robert": ("Bob", "Rob", "Bobby"),
    "Elizabeth": ("Liz", "Beth", "Lizzie"),
    "Katherine": ("Kate", "Kathy", "Katie"),
    "Margaret": ("Maggie", "Peggy", "Meg"),
    "Jennifer": ("Jen", "Jenny"),
    "Michael": ("Mike", "Mick"),
    "Richard": ("Rick", "Dick", "Richie"),
    "Joseph": ("Joe", "Joey"),
    "Daniel": ("Dan", "Danny"),
    "Matthew": ("Matt",),
    "Anthony": ("Tony",),
    "Christopher": ("Chris",),
    "Andrew": ("Andy", "Drew"),
    "Steven": ("Steve",),
    "Benjamin": ("Ben",),
    "Samuel": ("Sam",),
    "Joshua": ("Josh",),
    "Nathan": ("Nate",),
    "Rebecca": ("Becky", "Bec"),
    "Samantha": ("Sam", "Sammy"),
    "Deborah": ("Deb", "Debbie"),
    "Patricia": ("Pat", "Trish"),
    "Barbara": ("Barb",),
    "Jessica": ("Jess",),
    "Stephanie": ("Steph",),
    "Kimberley": ("Kim",),
    "Mohammed": ("Mohamed", "Muhammad", "Mohammad"),
    "Ahmed": ("Ahmad",),
    "Wiremu": ("Bill", "Wi"),
    "Hemi": ("James",),
    "Rawiri": ("David",),
    "Hohepa": ("Joseph",),
    "Theodore": ("Theo", "Ted"),
    "Alexander": ("Alex",),
    "Charlotte": ("Lottie",),
    "Thomas": ("Tom", "Tommy"),
    "James": ("Jim", "Jimmy"),
    "Henry": ("Harry",),
    "Abdullahi": ("Abdi",),
    "Sione": ("John",),
}
STREETS = (
    "Kauri Tōtara Rimu Kōwhai Pōhutukawa Matai Miro Tawa Nikau Karaka Puriri Manuka Harakeke "
    "Victoria Albert Queen King George Princes Church High Station Park Beach Hill Bridge Mill "
    "Fitzroy Hobson Grey Nelson Wellington Clyde Tasman Kent Devon Cambridge Oxford Durham "
    "Te_Atatū Great_North Great_South Dominion Mount_Eden Ponsonby Karangahape Jervois Riddiford "
    "Cuba Willis Manners Tory Adelaide Kilbirnie Rongotai Main Moorhouse Colombo Riccarton Papanui "
    "Cashel Gloucester Hereford Armagh Stuart Cumberland George_Street Princes_Street Caversham "
    "Tainui Takitimu Aotea Arawa Mataatua Tokomaru Kurahaupō Horouta Tāmaki Waitematā Manukau "
    "Rewa Waikato Hutt Taieri Clutha Rangitata Rakaia Waimakariri Whanganui Manawatū Rangitīkei "
    "Hillcrest Seaview Sunnyside Fairview Lakeview Bayview Ridgeway Glenfield Kingsway Northcote "
    "Mangere Otara Papatoetoe Manurewa Takanini Pakuranga Howick Botany Flatbush Ellerslie Onehunga"
).split()
STREETS = [name.replace("_", " ") for name in STREETS]
STREET_TYPES = ("Street", "Road", "Avenue", "Place", "Crescent", "Drive", "Lane", "Terrace", "Way", "Close")
# (city, region, first postcode, number of postcodes, relative population)
CITIES = (
    ("Auckland", "Auckland", 1010, 90, 30),
    ("Manukau", "Auckland", 2010, 40, 8),
    ("North Shore", "Auckland", 620, 15, 6),
    ("Waitakere", "Auckland", 610, 10, 5),
    ("Papakura", "Auckland", 2110, 5, 2),
    ("Whangārei", "Northland", 110, 10, 3),
    ("Kaitaia", "Northland", 410, 2, 1),
    ("Kerikeri", "Northland", 230, 2, 1),
    ("Hamilton", "Waikato", 3200, 20, 6),
    ("Huntly", "Waikato", 3700, 2, 1),
    ("Te Awamutu", "Waikato", 3800, 2, 1),
    ("Tokoroa", "Waikato", 3420, 2, 1),
    ("Tauranga", "Bay of Plenty", 3110, 10, 5),
    ("Rotorua", "Bay of Plenty", 3010, 6, 3),
    ("Whakatāne", "Bay of Plenty", 3120, 2, 1),
    ("Wellington", "Wellington", 6011, 30, 8),
    ("Lower Hutt", "Wellington", 5010, 10, 4),
    ("Porirua", "Wellington", 5022, 6, 3),
    ("Upper Hutt", "Wellington", 5018, 4, 2),
    ("Masterton", "Wellington", 5810, 2, 1),
    ("Christchurch", "Canterbury", 8011, 40, 10),
    ("Rangiora", "Canterbury", 7400, 2, 1),
    ("Ashburton", "Canterbury", 7700, 2, 1),
    ("Timaru", "Canterbury", 7910, 3, 1),
    ("Dunedin", "Otago", 9010, 15, 3),
    ("Oamaru", "Otago", 9400, 2, 1),
    ("Queenstown", "Otago", 9300, 2, 1),
    ("Invercargill", "Southland", 9810, 6, 2),
    ("Gore", "Southland", 9710, 1, 1),
    ("Nelson", "Other", 7010, 5, 2),
    ("Napier", "Other", 4110, 5, 2),
    ("Hastings", "Other", 4120, 5, 2),
    ("Palmerston North", "Other", 4410, 8, 3),
    ("New Plymouth", "Other", 4310, 6, 2),
    ("Whanganui", "Other", 4500, 3, 1),
    ("Gisborne", "Other", 4010, 3, 1),
    ("Blenheim", "Other", 7201, 2, 1),
    ("Greymouth", "Other", 7805, 1, 1),
)
