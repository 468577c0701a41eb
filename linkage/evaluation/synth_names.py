"""Name pools of the ``realistic`` synthetic profile, by background (curated lists and generated tails).

Every list below was written for this project (no name list is downloaded or copied): the
curated part of each list holds names common among New Zealanders of that background,
roughly most common first; :func:`name_pool` appends a generated tail of rarer names
built from the same syllables or word parts, so that each pool is large and its
frequencies fall off gently (see ``docs/synthetic-data.md``). Pools are deterministic.

Backgrounds: ``european`` (Pākehā, British, Irish, Dutch), ``maori``, ``pacific``
(Samoan, Tongan, Cook Islands, Niuean, Fijian), ``chinese``, ``indian``, ``asian``
(Filipino, Korean, Vietnamese, Sri Lankan), ``arabic`` (Syrian, Iraqi, Afghan; names
spelt in several transliterations), ``east_african`` (Somali, Eritrean, Ethiopian,
South Sudanese, Congolese), ``myanmar`` (Karen, Chin, Burmese, Rohingya), ``latin``
(Colombian; two surnames).
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "NICKNAMES",
    "SPELLINGS",
    "name_pool",
]


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.replace("_", " ") for word in text.split())


# -- curated given names: (female, male) ---------------------------------------------------

_GIVEN: dict[str, tuple[str, str]] = {
    "european": (
        "Sarah Emma Jessica Hannah Olivia Charlotte Sophie Emily Grace Amelia Ruby Isla Lily Ella Chloe "
        "Rebecca Rachel Michelle Nicole Stephanie Samantha Amanda Melissa Kimberley Kirsty Leanne Tania "
        "Karen Julie Susan Deborah Christine Jennifer Elizabeth Margaret Katherine Catherine Helen Anne "
        "Mary Patricia Barbara Linda Sandra Wendy Janet Gillian Alison Fiona Shona Jacqueline Joanne "
        "Natalie Kelly Megan Laura Amy Anna Claire Lisa Lauren Georgia Holly Jade Zoe Bethany Kayla "
        "Brooke Courtney Danielle Ashleigh Shannon Caitlin Jasmine Paige Abigail Madison Harper Willow "
        "Mia Ava Evie Poppy Matilda Isabella Sienna Maddison Phoebe Ivy Florence Hazel Violet Eleanor "
        "Aimee Bridget Carol Diane Dianne Dorothy Heather Irene Jean Joan Joy Judith Lorraine Lynette "
        "Maureen Noeline Pamela Raewyn Robyn Rosemary Sharon Shirley Valerie Vicki Yvonne Glenys Beverley "
        "Colleen Marilyn Kathleen Denise Debra Lynne Tracey Tracy Jodie Kerry Kylie Nadine Rochelle "
        "Sheree Toni Vanessa Alana Belinda Carla Renee Monique Hayley Stacey Krystal Chantelle Crystal "
        "Bianca Jamie Jordan Taylor Morgan Alexandra Victoria Jane Louise Rose Ellen Eva Frances Lucy "
        "Harriet Imogen Erin Keira Libby Maisie Penelope Stella Aurora Quinn Nina Kate Tessa Annabel",
        "James John David Michael Peter Paul Mark Andrew Richard Robert William Thomas Daniel Matthew "
        "Christopher Anthony Stephen Steven Joseph Benjamin Samuel Joshua Nathan Jacob Ryan Luke Liam "
        "Jack Oliver Noah Leo George Lucas Charlie Henry Hunter Mason Luca Theodore Harrison Cooper "
        "Ethan Dylan Tyler Connor Jordan Brandon Bradley Blake Caleb Cameron Callum Aaron Adam Alexander "
        "Alan Brian Bruce Colin Craig Darren Dean Dennis Donald Douglas Edward Gary Geoffrey Gordon "
        "Graeme Graham Grant Gregory Ian Jason Jeffrey Keith Kenneth Kevin Lance Lindsay Malcolm Murray "
        "Neil Nigel Noel Philip Raymond Rodney Ross Russell Scott Shane Simon Stuart Timothy Trevor "
        "Warren Wayne Brett Glenn Barry Bryan Clinton Dale Garry Hamish Kieran Kerry Leon Mitchell "
        "Nicholas Patrick Quentin Reuben Rhys Sean Shaun Travis Troy Vaughan Zac Zachary Jayden Kyle "
        "Logan Riley Jamie Josh Max Finn Archie Arlo Hugo Felix Oscar Ezra Jasper Louie Toby Harry "
        "Alfred Arthur Bernard Cecil Clifford Desmond Ernest Francis Frederick Harold Herbert Leonard "
        "Lionel Maurice Norman Ronald Stanley Walter Allan Angus Bevan Blair Campbell Duncan Euan Fraser "
        "Kurt Kane Jarrod Jared Jesse Levi Isaac Elijah Gabriel Hayden Declan Dominic Fergus Gavin",
    ),
    "maori": (
        "Aroha Mere Anahera Kiri Ngaire Hana Tui Manaia Kahurangi Marama Moana Aria Ataahua Hinemoa "
        "Huia Kaia Maia Ana Atawhai Awhina Hine Hinewai Kura Mihi Ngaio Pania Rangimarie Roimata Tia "
        "Waimarie Wairua Whetu Te_Aroha Tiaho Kaea Ariana Ihipera Riria Raiha Makareta Mereana Pareake "
        "Paretai Rawinia Rahera Tamara Tangiwai Tuhi Hera Heeni Hohipuha Keita Kataraina Maraea Miriama "
        "Ngahuia Ngarangi Ngawai Paea Parewai Peata Piata Pirihira Puawai Rangi Reremoana Ripeka "
        "Tahuri Tawhiri Tiare Tiahuia Tipene Waiata Wikitoria Ani Heni Huriana Kahu Kiriana Mahina "
        "Manawa Matiria Moerangi Ngapaki Oriwa Parekura Pounamu Rongo Tangimoana Tirea Turama Wairaka",
        "Wiremu Hemi Tama Rawiri Nikau Tane Manaaki Ihaia Hohepa Rangi Mikaere Tipene Kahu Anaru Matiu "
        "Te_Ariki Tamati Paora Pita Hone Wiremu_Te Arama Ariki Hamiora Hemana Heremaia Horomona Ihaka "
        "Kauri Keepa Kereama Koro Kupe Maaka Maui Mohi Nepia Ngata Paki Patariki Pene Piripi Rahiri "
        "Rata Rewi Riki Rongo Ruka Tai Takoda Tamahou Tana Tapu Tawhai Te_Rangi Tiaki Timoti Toa "
        "Tomairangi Tuhoe Tumanako Wai Whetu Hinewehi_Te Kaiah Kingi Mahaki Manu Marama Nga Ora Paikea "
        "Raniera Rapata Reweti Tahu Tamihana Tautahi Tawhiri Teina Tuhi Waaka Wikiriwhi Hamuera Aperahama",
    ),
    "pacific": (
        "Sina Losa Mele Salote Fetu Lagi Malia Ana Sieni Talia Mereana Leota Lupe Ofa Seini Siosaia "
        "Fatima Faith Grace Tupou Vaiola Luseane Ana_Maria Alofa Aiga Fale Faamanu Fiapapalagi Ioana "
        "Lanuola Leilani Lealofi Lesieli Lisiate Litia Losaline Makerita Mafi Manaia Mareta Masina "
        "Mataia Meleane Moana Naomi Nia Olivia Pele Pua Rosa Saane Salome Selai Selina Sepa Silia "
        "Sione_Ana Tafaoga Taupau Teuila Tiare Tina Toa Uluamu Vailea Vika Akanesi Eseta Fane Fifita "
        "Heilala Kalo Kelela Kilisitina Leotisia Lavinia Lose Melenaite Mosese_Ana Nanise Nunia Paea "
        "Sela Siueni Tevita_Ana Tupe Unaloto Vasiti Amelia Tiarepa Mereani Vaseva Makelesi Unaisi",
        "Sione Tevita Viliami Semisi Iosefa Falani Ioane Pita Malakai Tomasi Sefo Tavita Lui Mose "
        "Mosese Ofa Paula Penitoa Saia Samisoni Siaosi Sitani Taniela Tipoki Tuiasosopo Vailea Aisea "
        "Alapati Aleki Amosa Faleolo Fetuao Filipo Fuimaono Iakopo Iokapeta Isileli Kalolo Kolo "
        "Lauina Leota Lisiate Losefa Maka Manu Matiu Mikaele Niko Paulo Petelo Sale Salesi Sami "
        "Sefa Sekope Siale Simi Sosefo Taimani Talosaga Tasi Tautahi Telesia Toa Tonga Uelese Vai "
        "Vainikolo Iosua Jone Josefa Maciu Ratu Sakiusa Serupepeli Tevita_Junior Timoci Viliame Apisai",
    ),
    "chinese": (
        "Mei Xin Yan Li Na Ying Hui Jing Xiao Ling Fang Hong Lan Min Ping Qing Rui Shu Ting Wen Xia "
        "Yu Yun Zhen Jia Lei Lili Meiling Xiaoyan Jingjing Yuting Xiaomei Huiying Shuang Qian Yue Ning "
        "Jie Dan Juan Lin Ying_Ying Wing Ka_Yan Mei_Ling Siu Suk Wai Yee Man Kit Fung Lai Oi Pui",
        "Wei Jun Hao Ming Lei Jian Qiang Tao Yong Bin Chao Feng Gang Hui Jie Kai Liang Long Peng Qi "
        "Rui Tian Xin Yang Yi Zhi Zhong Jiahao Zihao Haoran Yuxuan Junjie Xiaoming Jianguo Zhiwei "
        "Chi Kin Wai Ho Man Kwok Chun Ka_Ho Tsz Ying Hon Sing Kwan Fai Wing Yiu Tak",
    ),
    "indian": (
        "Priya Ananya Divya Pooja Neha Sunita Anita Kavita Meena Rekha Shalini Sneha Aarti Deepa "
        "Geeta Harpreet Jaspreet Manpreet Gurpreet Simran Navneet Rupinder Amandeep Kiran Lakshmi "
        "Radha Sita Parvati Shanti Usha Asha Nisha Ritu Sonia Tanvi Isha Riya Aditi Anjali Bhavna "
        "Chitra Hema Jyoti Komal Madhu Nandini Padma Rashmi Sapna Swati Vandana Yamini Zara Farah "
        "Nirmala Saroj Savita Shobha Sushila Vidya Kamala Mala Uma Revathi Deepika Ishita Kriti",
        "Raj Arjun Rohan Vikram Amit Anil Sanjay Sunil Rajesh Ramesh Suresh Mahesh Vijay Ajay Deepak "
        "Harpreet Gurpreet Manpreet Jaspreet Harjit Sukhdeep Kuldeep Jagdeep Amrit Balwinder Rahul "
        "Rakesh Ravi Sandeep Satish Vinod Ashok Arun Ankit Aditya Akash Dev Gaurav Hari Karan Krishna "
        "Manoj Mohan Naveen Nikhil Pranav Prakash Pradeep Ritesh Sachin Sahil Sameer Sanjeev Shiv "
        "Siddharth Sumit Tarun Varun Vivek Yash Ishaan Kabir Aarav Vihaan Reyansh Ayaan Arnav Dhruv",
    ),
    "asian": (
        "Maria Rosario Cristina Maricel Marites Jocelyn Liza Rowena Analyn Jennelyn Kristine Angelica "
        "Ji-woo Seo-yeon Min-ji Soo-jin Eun-ji Hye-jin Yoo-jin Ji-hye Su-bin Ha-eun Mi-kyung Young-hee "
        "Linh Lan Mai Huong Thu Trang Ngoc Thao Hanh Phuong Anh Hoa Nguyet Tuyet Kim Dilani Nirosha "
        "Tharushi Sachini Chamari Ishara Nadeesha Anusha Thilini Kumari",
        "Jose Juan Mark John_Paul Ramon Rodel Jomar Rommel Reynaldo Ariel Jerome Christian Jayson "
        "Min-jun Seo-jun Ji-hoon Hyun-woo Jae-won Sung-min Dong-hyun Joon-ho Sang-woo Young-ho "
        "Minh Tuan Hung Duc Long Nam Quang Son Thanh Trung Vinh Hai Khanh Bao Dinh Chaminda Nuwan "
        "Kasun Ruwan Sampath Tharindu Dinesh Lasantha Pradeep Asanka",
    ),
    "arabic": (
        "Fatima Aisha Mariam Maryam Zainab Khadija Amina Noor Nour Layla Leila Sara Rania Huda Hiba "
        "Rana Dina Lina Reem Salma Samira Yasmin Yasmeen Zahra Farida Nargis Shirin Parwana Fariba "
        "Mahbooba Gulalai Zarghona Nazanin Roya Soraya Malalai Farzana Shabnam Marwa Asma Hanan "
        "Ghada Iman Jamila Nadia Rasha Safa Wafa Zeinab Shukria Freshta Hadia Muska Sadaf Tahmina",
        "Mohammed Ahmed Ali Omar Hassan Hussein Mahmoud Mustafa Yusuf Ibrahim Khalid Karim Farid "
        "Ahmad Abdullah Abdul Abdulrahman Abdulkarim Bilal Hamza Jamal Kamal Majid Nasser Rashid "
        "Said Samir Tariq Walid Yasin Zaid Ammar Anas Basel Fadi Firas Ghassan Haidar Imad Jalal "
        "Mazen Nabil Qasim Rami Sami Wael Ziad Nawid Farhad Jawad Mirwais Naveed Rahim Shafiq Zabihullah "
        "Habibullah Najibullah Hamid Sohail Wahid Ajmal Fawad Hekmat Javid Mansoor Masood Sayed",
    ),
    "east_african": (
        "Hodan Fadumo Ayaan Hawa Halima Asha Sahra Ubah Amran Deeqa Ifrah Idil Khadra Nasra Sagal "
        "Filsan Hibo Muna Nimco Ruqiya Saida Ladan Luul Warsan Zamzam Abeba Almaz Hiwot Meron Selam "
        "Senait Tigist Yordanos Helen_Tesfaye Mekdes Ruth Rahel Feven Nyibol Achol Adut Nyandeng "
        "Akuol Abuk Ayen Chantal Esperance Furaha Neema Solange Aline Divine Josiane Mapendo",
        "Abdi Abdullahi Mohamed Mohamud Ahmed Hassan Hussein Ali Omar Yusuf Ibrahim Abdirahman "
        "Abdirizak Abdiaziz Abdikadir Bashir Farah Guled Hamza Jama Liban Mahad Nuradin Said Warsame "
        "Yonas Dawit Tesfaye Bereket Haile Kidane Mesfin Samuel Solomon Tekle Yohannes Amanuel Daniel "
        "Deng Garang Majok Mabior Malual Akech Chol Kuol Jean_Claude Emmanuel Patrick Innocent "
        "Moise Pascal Prince Jean_Pierre Eric Fiston",
    ),
    "myanmar": (
        "Paw Naw Htoo Eh Moo Hsa Mu Tha Blu Say Wah Lah Ku Pi Nan Thin Thida Khin Aye Ei Hnin Su Zin "
        "Mya Myo Nwe Phyu Yadanar Sandar Cing Niang Par Sui Lian Hoih Mang Dim Kim Tial Noor Rahima "
        "Hamida Sofia Jannat Tasmin",
        "Saw Kyaw Htoo Eh Thar Ler Pah Kaw Say Blu Hser Gay Doh Wah Tun Aung Min Zaw Ko Naing Soe "
        "Hla Myint Thein Win Zin Lin Thang Lian Cung Biak Mang Ngun Sang Tial Van Hre Mohammed Rafiq "
        "Salim Nur Anwar Jubair Hashim",
    ),
    "latin": (
        "Maria Lucia Valentina Camila Daniela Gabriela Sofia Isabella Mariana Natalia Paula Andrea "
        "Carolina Catalina Alejandra Diana Juliana Laura Luisa Marcela Monica Sandra Tatiana Viviana "
        "Yolanda Adriana Angela Beatriz Claudia Gloria Luz Martha Patricia Rocio Ximena Yesenia",
        "Juan Carlos Andres Luis Diego Jose Miguel Jorge Santiago Sebastian Camilo Alejandro Felipe "
        "Daniel David Fernando Gabriel Javier Julian Manuel Mauricio Nicolas Oscar Pablo Ricardo "
        "Sergio Alvaro Cristian Eduardo Esteban Hernan Jaime Leonardo Mario Wilson Yeison",
    ),
}

# -- curated surnames ----------------------------------------------------------------------

_SURNAMES: dict[str, str] = {
    "european": (
        "Smith Williams Brown Wilson Taylor Jones Walker Thompson Anderson White Harris Martin Clark "
        "Young King Lee Wright Scott Green Baker Hall Campbell Mitchell Roberts Turner Phillips Davies "
        "Robinson Evans Thomas Johnson Moore Wood Jackson Edwards Hughes Stewart Murray Reid Robertson "
        "Morrison Fraser Henderson Sutherland Gallagher Fitzgerald Kelly Ryan Murphy OBrien OConnor "
        "McDonald MacKenzie McKenzie MacLeod McLeod Ross Hamilton Graham Kennedy Watson Paterson "
        "Cameron Duncan Ferguson Gibson Grant Hunter Johnston Kerr Marshall Milne Munro Russell Simpson "
        "Wallace Allan Anderson Bell Black Boyd Craig Crawford Cunningham Dickson Douglas Gordon Gray "
        "Hay Hill Hope Kirk Lamb Lang Lawson Little Lockhart Lyon Maxwell Miller Mills Muir Nicol Ogilvie "
        "Orr Reid Shaw Sinclair Stevenson Stirling Thomson Wilkinson Young Adams Allen Armstrong Atkinson "
        "Bailey Barker Barnes Bennett Berry Bird Bishop Bolton Booth Bradley Brooks Burton Butler Carter "
        "Chapman Clarke Cole Collins Cook Cooper Cox Dawson Day Dixon Ellis Fisher Fletcher Ford Foster "
        "Fox Gardner Gibbs Goodwin Graves Griffiths Hancock Harding Hart Harvey Hayes Holmes Hopkins "
        "Howard Hudson Hunt Jenkins Kemp Knight Lambert Lane Lawrence Lewis Lloyd Lowe Mann Marsh Mason "
        "Matthews Mills Moss Newman Nicholls Norris Owen Palmer Parker Parsons Payne Pearce Perry Porter "
        "Powell Price Read Reynolds Rhodes Richards Richardson Riley Rogers Rose Rowe Saunders Sharp "
        "Simmons Slater Spencer Stevens Stone Sutton Swift Thornton Tucker Turner Walsh Ward Warren "
        "Watts Webb Webster Wells West Wheeler Whitehead Wood Woods Yates Byrne Doyle Dunne Farrell "
        "Flanagan Flynn Keane Kearney Lynch Maguire McCarthy McGrath Moloney Nolan ONeill Power Quinn "
        "Regan Sheehan Sullivan Walsh Whelan Van_der_Berg Van_Dijk De_Vries Jansen Bakker Visser Smit "
        "Mulder De_Jong Van_Leeuwen Hendriks Dekker Bos Vos Peters Kuipers Schouten Brouwer Boer "
        "Andersen Hansen Jensen Nielsen Larsen Petersen Christensen Olsen Eriksen Johansen Schmidt "
        "Muller Schneider Fischer Weber Meyer Wagner Becker Hoffmann Koch Richter Klein Wolf Neumann "
        "Zimmermann Braun Kruger Hartmann Lange Werner Krause Lehmann Kaiser Fuchs Scholz Vogel Keller "
        "Ashworth Blackwell Bradshaw Cartwright Crossley Drummond Everett Fairweather Greenwood Harwood "
        "Holloway Kingsley Lindsay Merriman Northcott Pemberton Radcliffe Sherwood Stanbury Tennant "
        "Underwood Wakefield Westbrook Whitfield Winstanley Wyatt Aitken Baird Buchanan Dalziel "
        "Forsyth Galbraith Haig Inglis Kinnear Laidlaw Mackay Macdonald Mackintosh Mathieson Menzies "
        "Moffat Rutherford Scobie Strachan Tait Urquhart Veitch Wemyss"
    ),
    "maori": (
        "Parata Tipene Ngata Rangihau Tawhiri Karaka Paewai Tamihana Wihongi Te_Awa Te_Whata Te_Rangi "
        "Ruatapu Herewini Kereama Puketapu Mahuika Tapsell Tomoana Waaka Hapeta Hohaia Horomona "
        "Kawhia Kingi Mahanga Maihi Manihera Marino Matenga Moana Nepia Ngatai Paki Pomare Potae "
        "Poutama Rapana Rewi Rikihana Tahana Tainui Takerei Tamati Tangaere Taua Tautahi Te_Kani "
        "Te_Huia Te_Moana Te_Paa Te_Wani Te_Kira Te_Ngaio Tuhiwai Tuhoe Turei Waititi Whaanga Whaitiri "
        "Wharerau Wikaira Wiremu Aperahama Hemara Hetaraka Hiroti Hura Ihaka Kaa Kaiwai Kapa Katene "
        "Kohere Koopu Kupenga Mackey Makiha Mataira Matiu Morehu Moetara Ngamoki Niha Pene Pewhairangi "
        "Pohatu Rata Raukura Reweti Ririnui Ropata Ruawai Tamatea Tapiata Tawhai Te_Ao Te_Hiko "
        "Tihema Tukaki Tuwhare Wainohu Waretini Harawira Hauraki Henare Hona Kahukura Kaiwhata "
        "Marsden Mihaka Ngarimu Paraone Rangiwai Tahapeehi Taiaroa Whatuira Tuaine Pohio"
    ),
    "pacific": (
        "Faleolo Tuilagi Leota Fonoti Taufa Fifita Vaipulu Havili Tupou Lolohea Schuster Aumua "
        "Fa'amausili Fuimaono Ioane Lauina Leaupepe Leiataua Lemalu Lealaiauloto Mamea Matagi "
        "Pouono Sapolu Seiuli Simanu Soliai Sua Tagaloa Taotua Tauiliili Toleafoa Tuala Tuiasosopo "
        "Tuimavave Tupuola Vaifale Aholelei Fakatava Fifita Fonua Hufanga Kata Kauhalalalo Lātū Mahe "
        "Mafi Manu Moala Mateaki Naufahu Paea Piutau Pulu Taione Taumalolo Tonga Tuipulotu Vake "
        "Vainikolo Veikune Vunipola Cakobau Koroi Naivalu Nasau Ratu Rokoduru Tabua Tuilevuka "
        "Vakacegu Waqa Marsters Tangitamaiti Tamarua Tatuava Tuara Teariki Vaine Mataio Purua "
        "Tuiono Solomona Faumuina Pauga Pele Salave'a Sa'u Setefano Siliva Tanuvasa Tavita Toala "
        "Tauave Uili Va'a Aiono Alofa Amituanai Esera Fa'alogo Falaniko Iosefa Lemisio Masoe "
        "Mulitalo Niko Pasene Penitani Sefo Sopoaga Taliaoa Tanielu Tauiwi Ulufonua Vea Kioa"
    ),
    "chinese": (
        "Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo He Lin Gao Luo Zheng "
        "Liang Xie Song Tang Han Feng Deng Cao Peng Zeng Xiao Tian Dong Pan Yuan Cai Jiang Yu Du Ye "
        "Cheng Wei Su Lu Ding Ren Shen Yao Lu_Xu Jin Tan Fan Fu Lau Leung Chan Cheung Wong Ng Ho "
        "Lam Yip Kwok Chow Tsang Chiu Fong Tse Mok Lo Yeung Kwan Siu Chong Foo Kok Loke Tay Teo Goh "
        "Lim Tan_Sri Ong Yap Seah Low"
    ),
    "indian": (
        "Singh Kaur Patel Sharma Kumar Reddy Nair Gupta Shah Mehta Desai Joshi Iyer Pillai Menon Rao "
        "Verma Chopra Kapoor Malhotra Bhatia Arora Sethi Grewal Gill Sandhu Dhillon Sidhu Brar Sahota "
        "Bains Chahal Mann Randhawa Chauhan Yadav Mishra Pandey Tiwari Dubey Saxena Srivastava "
        "Agarwal Bansal Goel Jain Mittal Chaudhary Thakur Naidu Krishnan Subramaniam Ramachandran "
        "Raghavan Venkatesh Prasad Lal Ram Chand Naicker Narayan Sami Deo Datt Kishore Maharaj"
    ),
    "asian": (
        "Santos Reyes Cruz Bautista Ocampo Garcia Mendoza Torres Tomas Andrada Castillo Flores "
        "Villanueva Ramos Aquino Navarro Dela_Cruz De_Leon Manalo Pascual Kim Lee Park Choi Jung "
        "Kang Cho Yoon Jang Lim Han Oh Seo Shin Kwon Hwang Nguyen Tran Le Pham Hoang Phan Vu Vo Dang "
        "Bui Do Ho Ngo Duong Ly Perera Fernando Silva Jayasuriya Wickramasinghe Bandara Dissanayake "
        "Gunawardena Jayawardena Rajapaksa Senanayake Herath Kumara"
    ),
    "arabic": (
        "Al-Hassan Al-Rashid Haddad Mansour Khalil Nasser Hussein Ahmadi Rahimi Karimi Hashimi Noori "
        "Al-Ali Al-Ahmad Al-Khatib Al-Masri Al-Najjar Al-Saadi Al-Tamimi Al-Zubaidi Abbas Abdullah "
        "Aziz Darwish Farouk Habib Hamdan Ibrahim Ismail Jaber Kassem Mahmoud Mustafa Nassar Omar "
        "Qasim Rahman Saleh Sharif Suleiman Yousef Zaher Amiri Azizi Habibi Hakimi Hamidi Jafari "
        "Mohammadi Nazari Qaderi Rezaei Sadiqi Safi Sultani Wardak Popal Barakzai Durrani Sahak "
        "Stanikzai Yousufzai Kakar Mohmand Shinwari Haidari Faizi Nabizada Sarwari Ghafoori"
    ),
    "east_african": (
        "Abdullahi Mohamud Farah Warsame Hussein Osman Abdi Ali Hassan Ahmed Mohamed Yusuf Ibrahim "
        "Jama Aden Egal Elmi Dirie Guled Hersi Isse Nur Omar Said Salad Samatar Warfa Yasin Tesfaye "
        "Haile Gebre Tekle Kidane Berhane Woldemariam Ghebremedhin Mehari Desta Alemu Bekele Girma "
        "Deng Garang Majok Akech Chol Kuol Mabior Malual Ajak Bol Mayen Nyok Ilunga Kabongo Mukendi "
        "Tshibangu Mwamba Kalala Lukusa Mbuyi Ngoy Kasongo"
    ),
    "myanmar": (
        "Htoo Paw Moo Tun Aung Oo Htun Win Soe Lwin Myint Thein Zaw Naing Kyaw Hla Shwe Thang Lian "
        "Cung Khai Mang Sang Tial Hnin Nwe Say Blu Wah Lah Khin Maung Thant Zin Phyo Nyein Rahman "
        "Ullah Hossain Begum Khatun Alam"
    ),
    "latin": (
        "Rodriguez Garcia Martinez Lopez Hernandez Gonzalez Ramirez Gomez Diaz Perez Sanchez Torres "
        "Rojas Vargas Moreno Jimenez Munoz Castro Ortiz Ruiz Alvarez Romero Suarez Gutierrez Mendoza "
        "Restrepo Valencia Cardenas Quintero Ospina Velasquez Rincon Arango Cardona Zapata Salazar "
        "Ocampo Mejia Acosta Cabrera Escobar Fernandez Guerrero Herrera Marin Medina Molina Navarro "
        "Pineda Rivera Rubio Serrano Vega"
    ),
}

# -- name variants that agencies really see -------------------------------------------------

NICKNAMES: dict[str, tuple[str, ...]] = {
    "William": ("Bill", "Will", "Liam", "Billy"),
    "Robert": ("Bob", "Rob", "Bobby", "Robbie"),
    "Elizabeth": ("Liz", "Beth", "Lizzie", "Eliza"),
    "Katherine": ("Kate", "Kathy", "Katie"),
    "Catherine": ("Cathy", "Kate", "Cath"),
    "Margaret": ("Maggie", "Peggy", "Meg", "Marg"),
    "Jennifer": ("Jen", "Jenny"),
    "Michael": ("Mike", "Mick", "Mikey"),
    "Richard": ("Rick", "Dick", "Richie"),
    "Joseph": ("Joe", "Joey"),
    "Daniel": ("Dan", "Danny"),
    "Matthew": ("Matt",),
    "Anthony": ("Tony",),
    "Christopher": ("Chris",),
    "Christine": ("Chris", "Chrissy"),
    "Andrew": ("Andy", "Drew"),
    "Steven": ("Steve",),
    "Stephen": ("Steve",),
    "Benjamin": ("Ben",),
    "Samuel": ("Sam",),
    "Joshua": ("Josh",),
    "Nathan": ("Nate",),
    "Nicholas": ("Nick",),
    "Timothy": ("Tim",),
    "Gregory": ("Greg",),
    "Jeffrey": ("Jeff",),
    "Kenneth": ("Ken",),
    "Alexander": ("Alex", "Xander"),
    "Alexandra": ("Alex", "Lexi"),
    "Zachary": ("Zac",),
    "Rebecca": ("Becky", "Bec"),
    "Samantha": ("Sam", "Sammy"),
    "Deborah": ("Deb", "Debbie"),
    "Patricia": ("Pat", "Trish"),
    "Barbara": ("Barb",),
    "Jessica": ("Jess",),
    "Stephanie": ("Steph",),
    "Kimberley": ("Kim",),
    "Victoria": ("Vicky", "Tori"),
    "Jacqueline": ("Jackie",),
    "Theodore": ("Theo", "Ted"),
    "Charlotte": ("Lottie", "Charlie"),
    "Thomas": ("Tom", "Tommy"),
    "James": ("Jim", "Jimmy", "Jamie"),
    "Henry": ("Harry",),
    "Edward": ("Ed", "Eddie", "Ted"),
    "Frederick": ("Fred",),
    "Francis": ("Frank",),
    "Raymond": ("Ray",),
    "Ronald": ("Ron",),
    "Donald": ("Don",),
    "Douglas": ("Doug",),
    "Gordon": ("Gordie",),
    "Pamela": ("Pam",),
    "Susan": ("Sue", "Suzie"),
    "Valerie": ("Val",),
    "Wiremu": ("Bill", "Wi"),
    "Hemi": ("James",),
    "Rawiri": ("David",),
    "Hohepa": ("Joseph",),
    "Tamati": ("Thomas",),
    "Paora": ("Paul",),
    "Mere": ("Mary",),
    "Sione": ("John",),
    "Tevita": ("David",),
    "Viliami": ("William",),
    "Iosefa": ("Joseph",),
    "Losaline": ("Rosaline",),
    "Abdullahi": ("Abdi",),
    "Abdirahman": ("Abdi",),
    "Mohammed": ("Mo",),
    "Jose": ("Joe",),
    "Wei": ("William",),
    "Jun": ("John",),
    "Ming": ("Michael",),
    "Xiao": ("Sharon",),
    "Ying": ("Vivian",),
    "Min-jun": ("Michael",),
    "Ji-woo": ("Julie",),
}

# Transliterations: the same name written differently by different agencies.
SPELLINGS: dict[str, tuple[str, ...]] = {
    "Mohammed": ("Mohamed", "Muhammad", "Mohammad", "Mohamad", "Muhammed"),
    "Mohamed": ("Mohammed", "Maxamed", "Mohamud"),
    "Ahmed": ("Ahmad", "Axmed"),
    "Ahmad": ("Ahmed",),
    "Hussein": ("Husain", "Hussain", "Xuseen"),
    "Hassan": ("Hasan", "Xasan"),
    "Yusuf": ("Yousef", "Yousuf", "Youssef"),
    "Yousef": ("Yusuf", "Youssef"),
    "Abdullahi": ("Abdallah", "Cabdullahi"),
    "Abdullah": ("Abdallah", "Abdulla"),
    "Omar": ("Umar", "Cumar"),
    "Ibrahim": ("Ebrahim", "Ibraahim"),
    "Mustafa": ("Mostafa", "Moustafa"),
    "Fatima": ("Fatuma", "Fadumo", "Fatma"),
    "Fadumo": ("Fatima", "Faduma"),
    "Aisha": ("Ayesha", "Aysha", "Caasha"),
    "Mariam": ("Maryam", "Miriam", "Maryan"),
    "Zainab": ("Zaynab", "Zeinab"),
    "Khadija": ("Khadijah", "Hadija"),
    "Layla": ("Leila", "Laila"),
    "Yasmin": ("Yasmeen", "Jasmin"),
    "Nour": ("Noor", "Nur"),
    "Al-Hassan": ("Alhassan", "Hassan"),
    "Al-Rashid": ("Alrashid", "Rashid"),
    "Al-Ali": ("Alali", "Ali"),
    "Mohamud": ("Mohamed", "Maxamuud"),
    "Farah": ("Faarax",),
    "Osman": ("Othman", "Cismaan"),
    "Htoo": ("Htu", "Tu"),
    "Aung": ("Aong",),
    "Kyaw": ("Kyauk", "Chaw"),
    "Naw": ("Nao",),
    "Rodriguez": ("Rodrigues",),
    "Jose": ("Josue",),
    "Zhang": ("Cheung", "Chang"),
    "Chen": ("Chan", "Chin"),
    "Wang": ("Wong",),
    "Huang": ("Wong", "Hwang"),
    "Liu": ("Lau", "Lew"),
    "Lin": ("Lam", "Lim"),
    "Nguyen": ("Nguyễn", "Ngyuen"),
    "Tupou": ("Tubou",),
    "Faleolo": ("Fa'aleolo",),
    "Tevita": ("Davida",),
    "Siosaia": ("Josaia",),
    "Priya": ("Preeya",),
    "Harpreet": ("Harprit",),
    "Gurpreet": ("Gurprit",),
    "Mackenzie": ("McKenzie", "MacKenzie"),
    "MacKenzie": ("McKenzie", "Mackenzie"),
    "McKenzie": ("MacKenzie",),
    "MacLeod": ("McLeod",),
    "McLeod": ("MacLeod",),
    "Macdonald": ("McDonald", "MacDonald"),
    "McDonald": ("MacDonald",),
    "Thomson": ("Thompson",),
    "Thompson": ("Thomson",),
    "Philip": ("Phillip",),
    "Jeffrey": ("Geoffrey",),
    "Geoffrey": ("Jeffrey",),
    "Catherine": ("Katherine", "Kathryn"),
    "Katherine": ("Catherine", "Kathryn"),
    "Stephen": ("Steven",),
    "Steven": ("Stephen",),
    "Lindsay": ("Lindsey",),
    "Tracey": ("Tracy",),
    "Kimberley": ("Kimberly",),
    "Rachel": ("Rachael",),
    "Sarah": ("Sara",),
    "Hannah": ("Hana",),
    "Aroha": ("Arohanui",),
    "Rawiri": ("Rawiri",),
}

# -- generated tails -----------------------------------------------------------------------

_MAORI_SYLLABLES = tuple(
    c + v for c in ("", "h", "k", "m", "n", "ng", "p", "r", "t", "w", "wh") for v in "aeiou" if c + v != "wu"
)
_PACIFIC_SYLLABLES = tuple(c + v for c in ("", "f", "l", "m", "n", "p", "s", "t", "v", "k", "h") for v in "aeiou")
_PINYIN = _words(
    "an ai bao bo chang chao chen cheng chun da dan de fang fei feng gang guang hai han hao he hong hua "
    "hui jia jian jiao jie jin jing jun kai kang lan lei li liang lin ling long mei min ming na ning "
    "pei peng ping qi qian qiang qin qing rong rui shan sheng shu si song tao tian ting wei wen xia "
    "xiang xiao xin xing xiu xu xuan yan yang yi ying yong yu yuan yue yun ze zhen zheng zhi zhong zi"
)
_KOREAN = _words("min ji seo ha yeon woo jun hyun soo eun young jae sung hee jin kyung hye dong sang won")
_BURMESE = _words("aung kyaw min thant zaw htet naing phyo wai yan lin thu zin myo hla su nwe hnin ei mya")
_ARABIC_PARTS = _words("rahman rahim karim aziz majid latif wahid hamid jabbar qadir salam razzaq ghani hakim")
_ANGLO_PARTS = (
    _words("ash black brad brook cal cart cold cross dun fair green hart har hol king lang mar north pem "),
    _words("worth well shaw ford ridge ley ton wood field by ham stead more cott wick bury combe"),
)
_SCOTS = _words("mac mc")
_ROOTS = _words(
    "allister arthur bain bride cormack dougall ewan farlane gill gregor innes intyre kay kinnon lachlan "
    "laren lean lellan millan murdo nab naughton neil pherson quarrie rae ritchie taggart vicar whirter"
)
_SPANISH_ENDINGS = _words("ez es")
_SPANISH_ROOTS = _words("alvar benit dom enriqu estev ferr gil ibañ mart nun ordoñ rodrig sanch vel yañ")


def _syllable_names(
    rng: np.random.Generator, syllables: tuple[str, ...], count: int, lengths: tuple[int, ...] = (2, 3, 4)
) -> list[str]:
    out: set[str] = set()
    while len(out) < count:
        length = int(rng.choice(lengths))
        parts = [syllables[int(i)] for i in rng.integers(len(syllables), size=length)]
        name = "".join(parts)
        # Real names of these languages rarely repeat a syllable back to back.
        if 3 <= len(name) <= 12 and all(a != b for a, b in zip(parts, parts[1:], strict=False)):
            out.add(name.capitalize())
    return sorted(out)


def _combined(
    rng: np.random.Generator, first: tuple[str, ...], second: tuple[str, ...], count: int, sep: str = ""
) -> list[str]:
    combos = sorted({(a + sep + b) for a in first for b in second if a != b})
    chosen = rng.permutation(len(combos))[:count]
    return [combos[int(i)].capitalize() if not sep else combos[int(i)].title() for i in sorted(chosen)]


def _tail(background: str, kind: str, rng: np.random.Generator) -> list[str]:
    """Rarer names of a background, generated from its syllables or word parts."""
    if background == "maori":
        return _syllable_names(rng, _MAORI_SYLLABLES, 400 if kind == "surname" else 250)
    if background == "pacific":
        return _syllable_names(rng, _PACIFIC_SYLLABLES, 500 if kind == "surname" else 250)
    if background == "chinese":
        if kind == "surname":
            return []
        return _combined(rng, _PINYIN, _PINYIN, 600)
    if background == "asian":
        return _combined(rng, _KOREAN, _KOREAN, 150, sep="-") if kind != "surname" else []
    if background == "myanmar":
        return _combined(rng, _BURMESE, _BURMESE, 200, sep=" ")
    if background in ("arabic", "east_african"):
        if kind == "surname":
            return _combined(rng, ("abdul", "abdel", "abdi"), _ARABIC_PARTS, 40)
        return _combined(rng, ("abdul", "abd al ", "abdi"), _ARABIC_PARTS, 40) if kind == "male" else []
    if background == "latin" and kind == "surname":
        return [r.capitalize() + e for r in _SPANISH_ROOTS for e in _SPANISH_ENDINGS]
    if background == "european" and kind == "surname":
        return _combined(rng, *_ANGLO_PARTS, 500) + _combined(rng, _SCOTS, _ROOTS, 60)
    return []


@cache
def name_pool(background: str, kind: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Names of one background and kind (``female``, ``male`` or ``surname``) and their frequencies.

    The curated names, most common first, fall off as 1 / rank^0.7 and take 85% of the
    weight; the generated tail shares the rest evenly, so that a large population holds
    many rare names and few very common ones (the shape of real name frequencies, where
    half of all people carry names outside the top few hundred).

    >>> names, weights = name_pool("maori", "surname")
    >>> len(names) > 400, round(float(weights.sum()), 6)
    (True, 1.0)
    """
    if kind == "surname":
        curated = _words(_SURNAMES[background])
    else:
        female, male = _GIVEN[background]
        curated = _words(female if kind == "female" else male)
    curated = tuple(dict.fromkeys(curated))  # a name listed twice keeps its first rank
    rng = np.random.default_rng(_seed(background, kind))
    tail = [name for name in _tail(background, kind, rng) if name not in curated]
    weights = 1.0 / np.arange(1, len(curated) + 1) ** 0.7
    weights = weights / weights.sum() * (0.85 if tail else 1.0)
    if tail:
        weights = np.concatenate([weights, np.full(len(tail), 0.15 / len(tail))])
    return curated + tuple(tail), weights / weights.sum()


def _seed(background: str, kind: str) -> int:
    """A fixed seed per pool (Python's ``hash`` of a string changes between runs)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(f"{background}/{kind}"))


BACKGROUNDS = tuple(_GIVEN)
