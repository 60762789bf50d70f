/* pickle_test.c - tbx_pickle_dump / tbx_pickle_load against bytes written by Python 3.11's pickle. */
#include "toolbox/pickle.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct vec {
    const char *name, *hex, *json; /* json: expected decoded value (NULL when status != TBX_OK) */
    tbx_status status;
};

struct encvec {
    const char *name, *json, *hex;
};

/* Generated with python3 3.11.2: pickle.dumps(x, protocol=P).hex(); expected = JSON form. */
static const struct vec vectors[] = {
    {"int40/p2", "80024b282e",
     "40", TBX_OK},
    {"int40/p5", "80054b282e",
     "40", TBX_OK},
    {"int0/p2", "80024b002e",
     "0", TBX_OK},
    {"int0/p5", "80054b002e",
     "0", TBX_OK},
    {"int255/p2", "80024bff2e",
     "255", TBX_OK},
    {"int255/p5", "80054bff2e",
     "255", TBX_OK},
    {"int256/p2", "80024d00012e",
     "256", TBX_OK},
    {"int256/p5", "80059504000000000000004d00012e",
     "256", TBX_OK},
    {"int65535/p2", "80024dffff2e",
     "65535", TBX_OK},
    {"int65535/p5", "80059504000000000000004dffff2e",
     "65535", TBX_OK},
    {"int65536/p2", "80024a000001002e",
     "65536", TBX_OK},
    {"int65536/p5", "80059506000000000000004a000001002e",
     "65536", TBX_OK},
    {"neg1/p2", "80024affffffff2e",
     "-1", TBX_OK},
    {"neg1/p5", "80059506000000000000004affffffff2e",
     "-1", TBX_OK},
    {"neg129/p0", "492d3132390a2e",
     "-129", TBX_OK},
    {"neg129/p2", "80024a7fffffff2e",
     "-129", TBX_OK},
    {"neg129/p5", "80059506000000000000004a7fffffff2e",
     "-129", TBX_OK},
    {"int32min/p0", "492d323134373438333634380a2e",
     "-2147483648", TBX_OK},
    {"int32min/p2", "80024a000000802e",
     "-2147483648", TBX_OK},
    {"int32min/p5", "80059506000000000000004a000000802e",
     "-2147483648", TBX_OK},
    {"int32max/p2", "80024affffff7f2e",
     "2147483647", TBX_OK},
    {"int32max/p5", "80059506000000000000004affffff7f2e",
     "2147483647", TBX_OK},
    {"int32max_plus1/p2", "80028a0500000080002e",
     "2147483648", TBX_OK},
    {"int32max_plus1/p5", "80059508000000000000008a0500000080002e",
     "2147483648", TBX_OK},
    {"int32min_minus1/p2", "80028a05ffffff7fff2e",
     "-2147483649", TBX_OK},
    {"int32min_minus1/p5", "80059508000000000000008a05ffffff7fff2e",
     "-2147483649", TBX_OK},
    {"int64max/p2", "80028a08ffffffffffffff7f2e",
     "9223372036854775807", TBX_OK},
    {"int64max/p5", "8005950b000000000000008a08ffffffffffffff7f2e",
     "9223372036854775807", TBX_OK},
    {"int64min/p0", "4c2d393232333337323033363835343737353830384c0a2e",
     "-9223372036854775808", TBX_OK},
    {"int64min/p1", "4c2d393232333337323033363835343737353830384c0a2e",
     "-9223372036854775808", TBX_OK},
    {"int64min/p2", "80028a0800000000000000802e",
     "-9223372036854775808", TBX_OK},
    {"int64min/p3", "80038a0800000000000000802e",
     "-9223372036854775808", TBX_OK},
    {"int64min/p4", "8004950b000000000000008a0800000000000000802e",
     "-9223372036854775808", TBX_OK},
    {"int64min/p5", "8005950b000000000000008a0800000000000000802e",
     "-9223372036854775808", TBX_OK},
    {"big_neg/p2", "80028a070080395b8172fc2e",
     "-1000000000000000", TBX_OK},
    {"big_neg/p5", "8005950a000000000000008a070080395b8172fc2e",
     "-1000000000000000", TBX_OK},
    {"float/p0", "46312e350a2e",
     "1.5", TBX_OK},
    {"float/p1", "473ff80000000000002e",
     "1.5", TBX_OK},
    {"float/p2", "8002473ff80000000000002e",
     "1.5", TBX_OK},
    {"float/p3", "8003473ff80000000000002e",
     "1.5", TBX_OK},
    {"float/p4", "8004950a00000000000000473ff80000000000002e",
     "1.5", TBX_OK},
    {"float/p5", "8005950a00000000000000473ff80000000000002e",
     "1.5", TBX_OK},
    {"negzero/p2", "80024780000000000000002e",
     "-0.0", TBX_OK},
    {"negzero/p5", "8005950a000000000000004780000000000000002e",
     "-0.0", TBX_OK},
    {"float1e20/p0", "4631652b32300a2e",
     "1e+20", TBX_OK},
    {"float1e20/p2", "8002474415af1d78b58c402e",
     "1e+20", TBX_OK},
    {"float1e20/p5", "8005950a00000000000000474415af1d78b58c402e",
     "1e+20", TBX_OK},
    {"float01/p2", "8002473fb999999999999a2e",
     "0.1", TBX_OK},
    {"float01/p5", "8005950a00000000000000473fb999999999999a2e",
     "0.1", TBX_OK},
    {"nan/p0", "466e616e0a2e",
     "null", TBX_OK},
    {"nan/p2", "8002477ff80000000000002e",
     "null", TBX_OK},
    {"nan/p5", "8005950a00000000000000477ff80000000000002e",
     "null", TBX_OK},
    {"inf/p0", "462d696e660a2e",
     "null", TBX_OK},
    {"inf/p2", "800247fff00000000000002e",
     "null", TBX_OK},
    {"inf/p5", "8005950a0000000000000047fff00000000000002e",
     "null", TBX_OK},
    {"none/p2", "80024e2e",
     "null", TBX_OK},
    {"none/p5", "80054e2e",
     "null", TBX_OK},
    {"true/p0", "4930310a2e",
     "true", TBX_OK},
    {"true/p2", "8002882e",
     "true", TBX_OK},
    {"true/p5", "8005882e",
     "true", TBX_OK},
    {"false/p0", "4930300a2e",
     "false", TBX_OK},
    {"false/p2", "8002892e",
     "false", TBX_OK},
    {"false/p5", "8005892e",
     "false", TBX_OK},
    {"str_empty/p2", "8002580000000071002e",
     "\"\"", TBX_OK},
    {"str_empty/p5", "80059504000000000000008c00942e",
     "\"\"", TBX_OK},
    {"str_unicode/p0", "56e95c75303030615c75363565355c75363732630a70300a2e",
     "\"\\u00e9\\n\\u65e5\\u672c\"", TBX_OK},
    {"str_unicode/p2", "80025809000000c3a90ae697a5e69cac71002e",
     "\"\\u00e9\\n\\u65e5\\u672c\"", TBX_OK},
    {"str_unicode/p5", "8005950d000000000000008c09c3a90ae697a5e69cac942e",
     "\"\\u00e9\\n\\u65e5\\u672c\"", TBX_OK},
    {"str_nonbmp/p0", "565c55303030316636303020780a70300a2e",
     "\"\\ud83d\\ude00 x\"", TBX_OK},
    {"str_nonbmp/p1", "5806000000f09f9880207871002e",
     "\"\\ud83d\\ude00 x\"", TBX_OK},
    {"str_nonbmp/p2", "80025806000000f09f9880207871002e",
     "\"\\ud83d\\ude00 x\"", TBX_OK},
    {"str_nonbmp/p3", "80035806000000f09f9880207871002e",
     "\"\\ud83d\\ude00 x\"", TBX_OK},
    {"str_nonbmp/p4", "8004950a000000000000008c06f09f98802078942e",
     "\"\\ud83d\\ude00 x\"", TBX_OK},
    {"str_nonbmp/p5", "8005950a000000000000008c06f09f98802078942e",
     "\"\\ud83d\\ude00 x\"", TBX_OK},
    {"str_nul/p0", "56615c7530303030620a70300a2e",
     "\"a\\u0000b\"", TBX_OK},
    {"str_nul/p2", "8002580300000061006271002e",
     "\"a\\u0000b\"", TBX_OK},
    {"str_nul/p5", "80059507000000000000008c03610062942e",
     "\"a\\u0000b\"", TBX_OK},
    {"list_mixed/p0", "286c70300a49310a6156610a70310a614e614930310a6146312e350a61286470320a566b0a70330a56697427730a70340a73612e",
     "[1,\"a\",null,true,1.5,{\"k\":\"it's\"}]", TBX_OK},
    {"list_mixed/p1", "5d7100284b0158010000006171014e4930310a473ff80000000000007d710258010000006b7103580400000069742773710473652e",
     "[1,\"a\",null,true,1.5,{\"k\":\"it's\"}]", TBX_OK},
    {"list_mixed/p2", "80025d7100284b0158010000006171014e88473ff80000000000007d710258010000006b7103580400000069742773710473652e",
     "[1,\"a\",null,true,1.5,{\"k\":\"it's\"}]", TBX_OK},
    {"list_mixed/p3", "80035d7100284b0158010000006171014e88473ff80000000000007d710258010000006b7103580400000069742773710473652e",
     "[1,\"a\",null,true,1.5,{\"k\":\"it's\"}]", TBX_OK},
    {"list_mixed/p4", "80049524000000000000005d94284b018c0161944e88473ff80000000000007d948c016b948c04697427739473652e",
     "[1,\"a\",null,true,1.5,{\"k\":\"it's\"}]", TBX_OK},
    {"list_mixed/p5", "80059524000000000000005d94284b018c0161944e88473ff80000000000007d948c016b948c04697427739473652e",
     "[1,\"a\",null,true,1.5,{\"k\":\"it's\"}]", TBX_OK},
    {"celery_result/p2", "80027d71002858040000006172677371015d71024b016158060000006b776172677371037d710458010000006171054b027358020000006f6b710688752e",
     "{\"args\":[1],\"kwargs\":{\"a\":2},\"ok\":true}", TBX_OK},
    {"celery_result/p5", "80059529000000000000007d94288c0461726773945d944b01618c066b7761726773947d948c0161944b02738c026f6b9488752e",
     "{\"args\":[1],\"kwargs\":{\"a\":2},\"ok\":true}", TBX_OK},
    {"nested/p0", "286470300a56740a70310a2849310a2849320a49330a7470320a28747470330a73566c0a70340a286c70350a286c70360a61286c70370a286c70380a6161735674340a70390a2849310a49320a49330a49340a747031300a7356640a7031310a28647031320a56780a7031330a28647031340a56790a7031350a28647031360a7373732e",
     "{\"t\":[1,[2,3],[]],\"l\":[[],[[]]],\"t4\":[1,2,3,4],\"d\":{\"x\":{\"y\":{}}}}", TBX_OK},
    {"nested/p1", "7d7100285801000000747101284b01284b024b037471022974710358010000006c71045d7105285d71065d71075d71086165580200000074347109284b014b024b034b0474710a580100000064710b7d710c580100000078710d7d710e580100000079710f7d71107373752e",
     "{\"t\":[1,[2,3],[]],\"l\":[[],[[]]],\"t4\":[1,2,3,4],\"d\":{\"x\":{\"y\":{}}}}", TBX_OK},
    {"nested/p2", "80027d71002858010000007471014b014b024b038671022987710358010000006c71045d7105285d71065d71075d71086165580200000074347109284b014b024b034b0474710a580100000064710b7d710c580100000078710d7d710e580100000079710f7d71107373752e",
     "{\"t\":[1,[2,3],[]],\"l\":[[],[[]]],\"t4\":[1,2,3,4],\"d\":{\"x\":{\"y\":{}}}}", TBX_OK},
    {"nested/p3", "80037d71002858010000007471014b014b024b038671022987710358010000006c71045d7105285d71065d71075d71086165580200000074347109284b014b024b034b0474710a580100000064710b7d710c580100000078710d7d710e580100000079710f7d71107373752e",
     "{\"t\":[1,[2,3],[]],\"l\":[[],[[]]],\"t4\":[1,2,3,4],\"d\":{\"x\":{\"y\":{}}}}", TBX_OK},
    {"nested/p4", "80049547000000000000007d94288c0174944b014b024b0386942987948c016c945d94285d945d945d9461658c02743494284b014b024b034b0474948c0164947d948c0178947d948c0179947d947373752e",
     "{\"t\":[1,[2,3],[]],\"l\":[[],[[]]],\"t4\":[1,2,3,4],\"d\":{\"x\":{\"y\":{}}}}", TBX_OK},
    {"nested/p5", "80059547000000000000007d94288c0174944b014b024b0386942987948c016c945d94285d945d945d9461658c02743494284b014b024b034b0474948c0164947d948c0178947d948c0179947d947373752e",
     "{\"t\":[1,[2,3],[]],\"l\":[[],[[]]],\"t4\":[1,2,3,4],\"d\":{\"x\":{\"y\":{}}}}", TBX_OK},
    {"set/p0", "635f5f6275696c74696e5f5f0a7365740a70300a28286c70310a49310a6149320a617470320a5270330a2e",
     "[1,2]", TBX_OK},
    {"set/p1", "635f5f6275696c74696e5f5f0a7365740a7100285d7101284b014b02657471025271032e",
     "[1,2]", TBX_OK},
    {"set/p2", "8002635f5f6275696c74696e5f5f0a7365740a71005d7101284b014b02658571025271032e",
     "[1,2]", TBX_OK},
    {"set/p3", "8003636275696c74696e730a7365740a71005d7101284b014b02658571025271032e",
     "[1,2]", TBX_OK},
    {"set/p4", "80049509000000000000008f94284b014b02902e",
     "[1,2]", TBX_OK},
    {"set/p5", "80059509000000000000008f94284b014b02902e",
     "[1,2]", TBX_OK},
    {"set_empty/p2", "8002635f5f6275696c74696e5f5f0a7365740a71005d71018571025271032e",
     "[]", TBX_OK},
    {"set_empty/p5", "80058f942e",
     "[]", TBX_OK},
    {"frozenset/p0", "635f5f6275696c74696e5f5f0a66726f7a656e7365740a70300a28286c70310a49330a617470320a5270330a2e",
     "[3]", TBX_OK},
    {"frozenset/p2", "8002635f5f6275696c74696e5f5f0a66726f7a656e7365740a71005d71014b03618571025271032e",
     "[3]", TBX_OK},
    {"frozenset/p5", "8005950600000000000000284b0391942e",
     "[3]", TBX_OK},
    {"bytes/p0", "635f636f646563730a656e636f64650a70300a28566162630a70310a566c6174696e310a70320a7470330a5270340a2e",
     "\"abc\"", TBX_OK},
    {"bytes/p1", "635f636f646563730a656e636f64650a7100285803000000616263710158060000006c6174696e3171027471035271042e",
     "\"abc\"", TBX_OK},
    {"bytes/p2", "8002635f636f646563730a656e636f64650a71005803000000616263710158060000006c6174696e3171028671035271042e",
     "\"abc\"", TBX_OK},
    {"bytes/p3", "8003430361626371002e",
     "\"abc\"", TBX_OK},
    {"bytes/p4", "80049507000000000000004303616263942e",
     "\"abc\"", TBX_OK},
    {"bytes/p5", "80059507000000000000004303616263942e",
     "\"abc\"", TBX_OK},
    {"bytes_empty/p2", "8002635f5f6275696c74696e5f5f0a62797465730a7100295271012e",
     "\"\"", TBX_OK},
    {"bytes_empty/p5", "80059504000000000000004300942e",
     "\"\"", TBX_OK},
    {"bytearray/p0", "635f5f6275696c74696e5f5f0a6279746561727261790a70300a28635f636f646563730a656e636f64650a70310a285678790a70320a566c6174696e310a70330a7470340a5270350a7470360a5270370a2e",
     "\"xy\"", TBX_OK},
    {"bytearray/p2", "8002635f5f6275696c74696e5f5f0a6279746561727261790a7100635f636f646563730a656e636f64650a710158020000007879710258060000006c6174696e3171038671045271058571065271072e",
     "\"xy\"", TBX_OK},
    {"bytearray/p5", "8005950d000000000000009602000000000000007879942e",
     "\"xy\"", TBX_OK},
    {"shared_sublist/p0", "286c70300a286c70310a49310a6149320a616167310a61286470320a56610a70330a67310a73612e",
     "[[1,2],[1,2],{\"a\":[1,2]}]", TBX_OK},
    {"shared_sublist/p1", "5d7100285d7101284b014b026568017d71025801000000617103680173652e",
     "[[1,2],[1,2],{\"a\":[1,2]}]", TBX_OK},
    {"shared_sublist/p2", "80025d7100285d7101284b014b026568017d71025801000000617103680173652e",
     "[[1,2],[1,2],{\"a\":[1,2]}]", TBX_OK},
    {"shared_sublist/p3", "80035d7100285d7101284b014b026568017d71025801000000617103680173652e",
     "[[1,2],[1,2],{\"a\":[1,2]}]", TBX_OK},
    {"shared_sublist/p4", "80049518000000000000005d94285d94284b014b026568017d948c016194680173652e",
     "[[1,2],[1,2],{\"a\":[1,2]}]", TBX_OK},
    {"shared_sublist/p5", "80059518000000000000005d94285d94284b014b026568017d948c016194680173652e",
     "[[1,2],[1,2],{\"a\":[1,2]}]", TBX_OK},
    {"shared_str/p2", "80025d71002858110000006c6f6e6720737472696e672076616c756571016801652e",
     "[\"long string value\",\"long string value\"]", TBX_OK},
    {"shared_str/p5", "8005951b000000000000005d94288c116c6f6e6720737472696e672076616c7565946801652e",
     "[\"long string value\",\"long string value\"]", TBX_OK},
    {"nonstr_keys/p0", "286470300a49310a56610a70310a7346322e350a56620a70320a734e56630a70330a734930300a56640a70340a73492d370a56650a70350a734631652b32300a56660a70360a732e",
     "{\"1\":\"a\",\"2.5\":\"b\",\"None\":\"c\",\"False\":\"d\",\"-7\":\"e\",\"1e+20\":\"f\"}", TBX_OK},
    {"nonstr_keys/p1", "7d7100284b01580100000061710147400400000000000058010000006271024e58010000006371034930300a58010000006471044af9ffffff5801000000657105474415af1d78b58c405801000000667106752e",
     "{\"1\":\"a\",\"2.5\":\"b\",\"None\":\"c\",\"False\":\"d\",\"-7\":\"e\",\"1e+20\":\"f\"}", TBX_OK},
    {"nonstr_keys/p2", "80027d7100284b01580100000061710147400400000000000058010000006271024e58010000006371038958010000006471044af9ffffff5801000000657105474415af1d78b58c405801000000667106752e",
     "{\"1\":\"a\",\"2.5\":\"b\",\"None\":\"c\",\"False\":\"d\",\"-7\":\"e\",\"1e+20\":\"f\"}", TBX_OK},
    {"nonstr_keys/p3", "80037d7100284b01580100000061710147400400000000000058010000006271024e58010000006371038958010000006471044af9ffffff5801000000657105474415af1d78b58c405801000000667106752e",
     "{\"1\":\"a\",\"2.5\":\"b\",\"None\":\"c\",\"False\":\"d\",\"-7\":\"e\",\"1e+20\":\"f\"}", TBX_OK},
    {"nonstr_keys/p4", "80049538000000000000007d94284b018c0161944740040000000000008c0162944e8c016394898c0164944af9ffffff8c016594474415af1d78b58c408c016694752e",
     "{\"1\":\"a\",\"2.5\":\"b\",\"None\":\"c\",\"False\":\"d\",\"-7\":\"e\",\"1e+20\":\"f\"}", TBX_OK},
    {"nonstr_keys/p5", "80059538000000000000007d94284b018c0161944740040000000000008c0162944e8c016394898c0164944af9ffffff8c016594474415af1d78b58c408c016694752e",
     "{\"1\":\"a\",\"2.5\":\"b\",\"None\":\"c\",\"False\":\"d\",\"-7\":\"e\",\"1e+20\":\"f\"}", TBX_OK},
    {"exception/p0", "286470300a566578635f747970650a70310a5656616c75654572726f720a70320a73566578635f6d6573736167650a70330a28566261642076616c756520370a70340a7470350a73566578635f6d6f64756c650a70360a566275696c74696e730a70370a732e",
     "{\"exc_type\":\"ValueError\",\"exc_message\":[\"bad value 7\"],\"exc_module\":\"builtins\"}", TBX_OK},
    {"exception/p2", "80027d71002858080000006578635f747970657101580a00000056616c75654572726f727102580b0000006578635f6d6573736167657103580b0000006261642076616c756520377104857105580a0000006578635f6d6f64756c65710658080000006275696c74696e737107752e",
     "{\"exc_type\":\"ValueError\",\"exc_message\":[\"bad value 7\"],\"exc_module\":\"builtins\"}", TBX_OK},
    {"exception/p5", "80059553000000000000007d94288c086578635f74797065948c0a56616c75654572726f72948c0b6578635f6d657373616765948c0b6261642076616c756520379485948c0a6578635f6d6f64756c65948c086275696c74696e7394752e",
     "{\"exc_type\":\"ValueError\",\"exc_message\":[\"bad value 7\"],\"exc_module\":\"builtins\"}", TBX_OK},
    {"started/p2", "80027d710028580300000070696471014d24595808000000686f73746e616d6571025805000000773240766d7103752e",
     "{\"pid\":22820,\"hostname\":\"w2@vm\"}", TBX_OK},
    {"started/p5", "80059521000000000000007d94288c03706964944d24598c08686f73746e616d65948c05773240766d94752e",
     "{\"pid\":22820,\"hostname\":\"w2@vm\"}", TBX_OK},
    {"datetime/p0", "636461746574696d650a6461746574696d650a70300a28635f636f646563730a656e636f64650a70310a285607e401020304055c75303030305c75303030305c75303030300a70320a566c6174696e310a70330a7470340a5270350a7470360a5270370a2e", NULL, TBX_EUNSUPPORTED},
    {"datetime/p2", "8002636461746574696d650a6461746574696d650a7100635f636f646563730a656e636f64650a7101580b00000007c3a40102030405000000710258060000006c6174696e3171038671045271058571065271072e", NULL, TBX_EUNSUPPORTED},
    {"datetime/p5", "8005952a000000000000008c086461746574696d65948c086461746574696d65949394430a07e4010203040500000094859452942e", NULL, TBX_EUNSUPPORTED},
    {"bigint/p0", "4c31383434363734343037333730393535313631364c0a2e", NULL, TBX_EUNSUPPORTED},
    {"bigint/p2", "80028a090000000000000000012e", NULL, TBX_EUNSUPPORTED},
    {"bigint/p5", "8005950c000000000000008a090000000000000000012e", NULL, TBX_EUNSUPPORTED},
    {"bigneg/p0", "4c2d393232333337323033363835343737353830394c0a2e", NULL, TBX_EUNSUPPORTED},
    {"bigneg/p2", "80028a09ffffffffffffff7fff2e", NULL, TBX_EUNSUPPORTED},
    {"bigneg/p5", "8005950c000000000000008a09ffffffffffffff7fff2e", NULL, TBX_EUNSUPPORTED},
    {"bytes_not_utf8/p0", "635f636f646563730a656e636f64650a70300a2856ff5c75303030300a70310a566c6174696e310a70320a7470330a5270340a2e", NULL, TBX_EUNSUPPORTED},
    {"bytes_not_utf8/p2", "8002635f636f646563730a656e636f64650a71005803000000c3bf00710158060000006c6174696e3171028671035271042e", NULL, TBX_EUNSUPPORTED},
    {"bytes_not_utf8/p5", "80059506000000000000004302ff00942e", NULL, TBX_EUNSUPPORTED},
    {"tuple_key/p0", "286470300a2849310a49320a7470310a56780a70320a732e", NULL, TBX_EUNSUPPORTED},
    {"tuple_key/p2", "80027d71004b014b028671015801000000787102732e", NULL, TBX_EUNSUPPORTED},
    {"tuple_key/p5", "8005950e000000000000007d944b014b0286948c017894732e", NULL, TBX_EUNSUPPORTED},
    {"surrogate/p0", "565c75643830300a70300a2e", NULL, TBX_EUNSUPPORTED},
    {"surrogate/p2", "80025803000000eda08071002e", NULL, TBX_EUNSUPPORTED},
    {"surrogate/p5", "80059507000000000000008c03eda080942e", NULL, TBX_EUNSUPPORTED},
    {"recursive_list/p0", "286c70300a67300a612e", NULL, TBX_EUNSUPPORTED},
    {"recursive_list/p2", "80025d71006800612e", NULL, TBX_EUNSUPPORTED},
    {"recursive_list/p5", "80059506000000000000005d946800612e", NULL, TBX_EUNSUPPORTED},
    {"recursive_dict/p0", "286470300a5673656c660a70310a67300a732e", NULL, TBX_EUNSUPPORTED},
    {"recursive_dict/p2", "80027d7100580400000073656c6671016800732e", NULL, TBX_EUNSUPPORTED},
    {"recursive_dict/p5", "8005950d000000000000007d948c0473656c66946800732e", NULL, TBX_EUNSUPPORTED},
};

/* Generated: pickletools.optimize(pickle.dumps(x, 2)).hex() for JSON-shaped x. */
static const struct encvec enc_vectors[] = {
    {"int40", "40",
     "80024b282e"},
    {"int0", "0",
     "80024b002e"},
    {"int255", "255",
     "80024bff2e"},
    {"int256", "256",
     "80024d00012e"},
    {"int65535", "65535",
     "80024dffff2e"},
    {"int65536", "65536",
     "80024a000001002e"},
    {"neg1", "-1",
     "80024affffffff2e"},
    {"neg129", "-129",
     "80024a7fffffff2e"},
    {"int32min", "-2147483648",
     "80024a000000802e"},
    {"int32max", "2147483647",
     "80024affffff7f2e"},
    {"int32max_plus1", "2147483648",
     "80028a0500000080002e"},
    {"int32min_minus1", "-2147483649",
     "80028a05ffffff7fff2e"},
    {"int64max", "9223372036854775807",
     "80028a08ffffffffffffff7f2e"},
    {"int64min", "-9223372036854775808",
     "80028a0800000000000000802e"},
    {"big_neg", "-1000000000000000",
     "80028a070080395b8172fc2e"},
    {"float", "1.5",
     "8002473ff80000000000002e"},
    {"negzero", "-0.0",
     "80024780000000000000002e"},
    {"float1e20", "1e+20",
     "8002474415af1d78b58c402e"},
    {"float01", "0.1",
     "8002473fb999999999999a2e"},
    {"none", "null",
     "80024e2e"},
    {"true", "true",
     "8002882e"},
    {"false", "false",
     "8002892e"},
    {"str_empty", "\"\"",
     "800258000000002e"},
    {"str_unicode", "\"\\u00e9\\n\\u65e5\\u672c\"",
     "80025809000000c3a90ae697a5e69cac2e"},
    {"str_nonbmp", "\"\\ud83d\\ude00 x\"",
     "80025806000000f09f988020782e"},
    {"str_nul", "\"a\\u0000b\"",
     "800258030000006100622e"},
    {"list_mixed", "[1,\"a\",null,true,1.5,{\"k\":\"it's\"}]",
     "80025d284b015801000000614e88473ff80000000000007d58010000006b58040000006974277373652e"},
    {"celery_result", "{\"args\":[1],\"kwargs\":{\"a\":2},\"ok\":true}",
     "80027d285804000000617267735d4b016158060000006b77617267737d5801000000614b027358020000006f6b88752e"},
    {"started", "{\"pid\":22820,\"hostname\":\"w2@vm\"}",
     "80027d2858030000007069644d24595808000000686f73746e616d655805000000773240766d752e"},
};

/* ---- helpers ---------------------------------------------------------------- */

static unsigned char *unhex(const char *hex, size_t *n)
{
    size_t len = strlen(hex) / 2;
    unsigned char *b = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
        b[i] = (unsigned char)v;
    }
    *n = len;
    return b;
}

static char *tohex(const unsigned char *b, size_t n)
{
    char *s = malloc(2 * n + 1);
    ck_assert_ptr_nonnull(s);
    for (size_t i = 0; i < n; i++)
        snprintf(s + 2 * i, 3, "%02x", b[i]);
    s[2 * n] = '\0';
    return s;
}

static int contains(const unsigned char *hay, size_t n, const char *needle, size_t k)
{
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(hay + i, needle, k))
            return 1;
    return 0;
}

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(v != NULL, "bad JSON %s: %s", text, jerr.text);
    return v;
}

static tbx_status load(const void *bytes, size_t n, json_t **out, tbx_error *err)
{
    memset(err, 0, sizeof *err);
    return tbx_pickle_load(bytes, n, out, err);
}

#define LOADS(lit, out, err) load(lit, sizeof(lit) - 1, out, err)

static void assert_loads_to(const char *bytes, size_t n, const char *expected_json, int line)
{
    json_t *v;
    tbx_error err;
    tbx_status st = load(bytes, n, &v, &err);
    ck_assert_msg(st == TBX_OK, "line %d: load failed (%d): %s", line, (int)st, err.msg);
    json_t *want = parse(expected_json);
    char *got = json_dumps(v, JSON_ENCODE_ANY);
    ck_assert_msg(json_equal(v, want), "line %d: got %s, want %s", line, got, expected_json);
    free(got);
    json_decref(want);
    json_decref(v);
}

#define ASSERT_LOADS(lit, json) assert_loads_to(lit, sizeof(lit) - 1, json, __LINE__)

static void assert_load_fails(const char *bytes, size_t n, tbx_status want, const char *msg_part, int line)
{
    json_t *v = (json_t *)1;
    tbx_error err;
    tbx_status st = load(bytes, n, &v, &err);
    ck_assert_msg(st == want, "line %d: status %d, want %d (%s)", line, (int)st, (int)want, err.msg);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(err.code, want);
    if (msg_part)
        ck_assert_msg(strstr(err.msg, msg_part) != NULL, "line %d: message '%s' lacks '%s'", line, err.msg, msg_part);
}

#define ASSERT_FAILS(lit, st, part) assert_load_fails(lit, sizeof(lit) - 1, st, part, __LINE__)

/* ---- decoding Python's output ------------------------------------------------- */

START_TEST(test_python_vectors)
{
    const struct vec *t = &vectors[_i];
    size_t n;
    unsigned char *b = unhex(t->hex, &n);
    json_t *v;
    tbx_error err;
    tbx_status st = load(b, n, &v, &err);
    ck_assert_msg(st == t->status, "%s: status %d, want %d (%s)", t->name, (int)st, (int)t->status, err.msg);
    if (st == TBX_OK) {
        json_t *want = parse(t->json);
        char *got = json_dumps(v, JSON_ENCODE_ANY);
        ck_assert_msg(json_equal(v, want), "%s: got %s, want %s", t->name, got, t->json);
        free(got);
        json_decref(want);
        json_decref(v);
    } else {
        ck_assert_ptr_null(v);
        ck_assert_int_eq(err.code, t->status);
        ck_assert(err.msg[0] != '\0');
    }
    /* every strict prefix is an error, never a crash or a success */
    for (size_t k = 0; k < n; k++) {
        st = load(b, k, &v, &err);
        ck_assert_msg(st != TBX_OK, "%s: prefix of %zu bytes decoded", t->name, k);
        if (t->status == TBX_OK)
            ck_assert_msg(st == TBX_EDECODE, "%s: prefix %zu gave %d (%s)", t->name, k, (int)st, err.msg);
    }
    free(b);
}
END_TEST

/* celery-wire.md §2.6 reference bytes */
static const char ref40[] = "\x80\x02\x4b\x28\x2e";
static const char ref_started[] =
    "\x80\x02\x7d\x71\x00\x28\x58\x03\x00\x00\x00\x70\x69\x64\x71\x01\x4b\x01\x58\x08\x00\x00\x00\x68\x6f"
    "\x73\x74\x6e\x61\x6d\x65\x71\x02\x58\x01\x00\x00\x00\x68\x71\x03\x75\x2e";
static const char ref_valueerror[] =
    "\x80\x02\x7d\x28\x58\x08\x00\x00\x00\x65\x78\x63\x5f\x74\x79\x70\x65\x58\x0a\x00\x00\x00\x56\x61\x6c"
    "\x75\x65\x45\x72\x72\x6f\x72"
    "\x58\x0b\x00\x00\x00\x65\x78\x63\x5f\x6d\x65\x73\x73\x61\x67\x65\x58\x03\x00\x00\x00\x62\x61\x64\x85"
    "\x58\x0a\x00\x00\x00\x65\x78\x63\x5f\x6d\x6f\x64\x75\x6c\x65\x58\x08\x00\x00\x00\x62\x75\x69\x6c\x74"
    "\x69\x6e\x73\x75\x2e";

START_TEST(test_reference_bytes)
{
    ASSERT_LOADS(ref40, "40");
    ASSERT_LOADS(ref_started, "{\"pid\": 1, \"hostname\": \"h\"}");
    ASSERT_LOADS(ref_valueerror, "{\"exc_type\": \"ValueError\", \"exc_message\": [\"bad\"], \"exc_module\": \"builtins\"}");

    unsigned char *out;
    size_t n;
    json_t *v = json_integer(40);
    ck_assert_int_eq(tbx_pickle_dump(v, &out, &n, NULL), TBX_OK);
    ck_assert_uint_eq(n, sizeof ref40 - 1);
    ck_assert(memcmp(out, ref40, n) == 0);
    free(out);
    json_decref(v);

    v = parse("[\"bad\"]");
    ck_assert_int_eq(tbx_pickle_dump_exception("ValueError", "builtins", v, &out, &n, NULL), TBX_OK);
    ck_assert_uint_eq(n, sizeof ref_valueerror - 1);
    ck_assert(memcmp(out, ref_valueerror, n) == 0);
    free(out);
    json_decref(v);
}
END_TEST

START_TEST(test_shared_memo)
{
    /* x = [1, 2]; pickle.dumps([x, x, {'a': x}], 2): one json_t referenced three times */
    json_t *v;
    tbx_error err;
    size_t n;
    unsigned char *b = NULL;
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++)
        if (!strcmp(vectors[i].name, "shared_sublist/p2"))
            b = unhex(vectors[i].hex, &n);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(load(b, n, &v, &err), TBX_OK);
    json_t *x = json_array_get(v, 0);
    ck_assert_ptr_eq(x, json_array_get(v, 1));
    ck_assert_ptr_eq(x, json_object_get(json_array_get(v, 2), "a"));
    json_decref(v);
    free(b);

    /* PUT/GET text forms, MEMOIZE, LONG_BINPUT/LONG_BINGET, sparse keys */
    ASSERT_LOADS("(I7\np0\n0g0\ng0\nl.", "[7, 7]");
    ASSERT_LOADS("\x80\x04]\x94K\x01" "a0h\x00.", "[1]");
    ASSERT_LOADS("\x80\x02X\x01\x00\x00\x00" "ar\x05\x00\x00\x00" "0j\x05\x00\x00\x00.", "\"a\"");
    ASSERT_LOADS("\x80\x02K\x05p99999999999\n0g99999999999\n.", "5");
    /* a memoized container extended through GET before it is stored anywhere */
    ASSERT_LOADS("\x80\x02]q\x00" "0h\x00K\x01" "a0h\x00.", "[1]");
    ASSERT_FAILS("\x80\x02K\x01h\x03.", TBX_EDECODE, "memo key 3");
    ASSERT_FAILS("\x80\x02q\x00.", TBX_EDECODE, "underflow");
}
END_TEST

START_TEST(test_recursive_rejected)
{
    /* l = []; l.append(l) */
    ASSERT_FAILS("\x80\x02]q\x00h\x00" "a.", TBX_EUNSUPPORTED, "recursive");
    /* a = []; b = [a]; a.append(b): a is changed after being stored in b */
    ASSERT_FAILS("\x80\x02]q\x00]q\x01h\x00" "a" "0h\x00h\x01" "a.", TBX_EUNSUPPORTED, "recursive");
    /* d = {}; d['k'] = d */
    ASSERT_FAILS("\x80\x02}q\x00X\x01\x00\x00\x00kh\x00s.", TBX_EUNSUPPORTED, "recursive");
}
END_TEST

/* ---- protocol 0 text forms and other hand-made inputs -------------------------- */

START_TEST(test_text_forms)
{
    ASSERT_LOADS("I01\n.", "true");
    ASSERT_LOADS("I00\n.", "false");
    ASSERT_LOADS("I0x10\n.", "16");
    ASSERT_LOADS("I-42\n.", "-42");
    ASSERT_LOADS("L123L\n.", "123");
    ASSERT_LOADS("L-9223372036854775808L\n.", "-9223372036854775808");
    ASSERT_FAILS("L9223372036854775808L\n.", TBX_EUNSUPPORTED, "64 bits");
    ASSERT_FAILS("L123456789012345678901234567890123456789012345678901234567890123456789012345678L\n.",
                 TBX_EUNSUPPORTED, "64 bits");
    ASSERT_FAILS("I12a\n.", TBX_EDECODE, "integer");
    ASSERT_LOADS("F1.25\n.", "1.25");
    ASSERT_LOADS("F1e400\n.", "null");
    ASSERT_LOADS("Fnan\n.", "null");
    ASSERT_FAILS("F1,5\n.", TBX_EDECODE, "float");
    ASSERT_LOADS("S'a\\x41\\n\\'\\101\\q'\n.", "\"aA\\n'A\\\\q\"");
    ASSERT_LOADS("S\"it's\"\n.", "\"it's\"");
    ASSERT_FAILS("Sabc\n.", TBX_EDECODE, "quoted");
    ASSERT_FAILS("S'\\x4'\n.", TBX_EDECODE, "\\x");
    ASSERT_LOADS("V\\u00e9\\U0001f600\n.", "\"\\u00e9\\ud83d\\ude00\"");
    ASSERT_LOADS("Vx\\y\\\\u0041\n.", "\"x\\\\y\\\\\\\\u0041\"");
    ASSERT_LOADS("V\xe9\n.", "\"\\u00e9\"");
    ASSERT_FAILS("V\\u00\n.", TBX_EDECODE, "\\u");
    ASSERT_FAILS("V\\ud800\n.", TBX_EUNSUPPORTED, "surrogate");
    ASSERT_FAILS("V\\U00110000\n.", TBX_EDECODE, "range");
    ASSERT_LOADS("U\x03" "abc.", "\"abc\"");
    ASSERT_LOADS("T\x02\x00\x00\x00" "ab.", "\"ab\"");
    ASSERT_FAILS("T\xff\xff\xff\xff" "ab.", TBX_EDECODE, "negative");
    /* dict from MARK ... DICT, tuple keys refused, odd items refused */
    ASSERT_LOADS("(S'a'\nI1\nS'b'\nNd.", "{\"a\": 1, \"b\": null}");
    ASSERT_FAILS("(S'a'\nd.", TBX_EDECODE, "odd");
    ASSERT_FAILS("((I1\ntS'x'\nd.", TBX_EUNSUPPORTED, "dict key of type tuple");
    /* a bytes key is not a str key */
    ASSERT_FAILS("\x80\x03}C\x01kK\x01s.", TBX_EUNSUPPORTED, "dict key of type bytes");
    /* POP of a MARK, POP_MARK, DUP */
    ASSERT_LOADS("\x80\x02K\x01(0.", "1");
    ASSERT_LOADS("\x80\x02K\x01(K\x02K\x03" "1.", "1");
    ASSERT_LOADS("\x80\x02K\x01" "2\x86.", "[1, 1]");
    /* trailing bytes after STOP are ignored, as pickle.loads does */
    ASSERT_LOADS("\x80\x02K\x01.garbage", "1");
    /* non-minimal LONG1 encodings */
    ASSERT_LOADS("\x80\x02\x8a\x00.", "0");
    ASSERT_LOADS("\x80\x02\x8a\x0a\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00.", "1");
    ASSERT_LOADS("\x80\x02\x8a\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff.", "-1");
    ASSERT_LOADS("\x80\x02\x8b\x01\x00\x00\x00\x80.", "-128");
    ASSERT_FAILS("\x80\x02\x8b\xff\xff\xff\xff.", TBX_EDECODE, "negative");
}
END_TEST

START_TEST(test_malformed)
{
    ASSERT_FAILS("", TBX_EDECODE, "empty");
    ASSERT_FAILS("\x80\x02", TBX_EDECODE, "STOP");
    ASSERT_FAILS("\x80\x02K", TBX_EDECODE, "truncated");
    ASSERT_FAILS("\x80\x02.", TBX_EDECODE, "underflow");
    ASSERT_FAILS("\x80\x02(.", TBX_EDECODE, "underflow");
    ASSERT_FAILS("\x80\x02K\x01(.", TBX_EDECODE, "underflow");
    ASSERT_FAILS("\x80\x02" "e.", TBX_EDECODE, "MARK");
    ASSERT_FAILS("\x80\x02K\x01" "a.", TBX_EDECODE, "underflow");
    ASSERT_FAILS("\x80\x02]K\x01K\x02s.", TBX_EDECODE, "not a dict");
    ASSERT_FAILS("\x80\x02)K\x01" "a.", TBX_EDECODE, "not a list");
    ASSERT_FAILS("\x80\x02]K\x01(a.", TBX_EDECODE, "underflow");
    ASSERT_FAILS("\x80\x02\xff.", TBX_EDECODE, "unknown opcode 0xff");
    ASSERT_FAILS("\x80\x02X\x05\x00\x00\x00" "ab.", TBX_EDECODE, "truncated");
    ASSERT_FAILS("\x80\x02X\x02\x00\x00\x00\xc3(.", TBX_EDECODE, "UTF-8");
    ASSERT_FAILS("\x80\x05\x95\xff\x00\x00\x00\x00\x00\x00\x00K\x01.", TBX_EDECODE, "frame");
    ASSERT_FAILS("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff.", TBX_EDECODE, "truncated");
    ASSERT_FAILS("I1", TBX_EDECODE, "newline");
    ASSERT_FAILS("\x80\x06K\x01.", TBX_EUNSUPPORTED, "protocol 6");
    ASSERT_FAILS("\x80\x02X\x03\x00\x00\x00\xed\xa0\x80.", TBX_EUNSUPPORTED, "surrogate");

    tbx_error err;
    json_t *v;
    ck_assert_int_eq(tbx_pickle_load(NULL, 1, &v, &err), TBX_EINVAL);
    ck_assert_int_eq(tbx_pickle_load((const unsigned char *)".", 1, NULL, &err), TBX_EINVAL);
    ck_assert_int_eq(tbx_pickle_load((const unsigned char *)"\x80\x02K\x01.", 5, &v, NULL), TBX_OK);
    json_decref(v);
    ck_assert_int_eq(tbx_pickle_load((const unsigned char *)"\x80\x02.", 3, &v, NULL), TBX_EDECODE);
}
END_TEST

START_TEST(test_python_objects_refused)
{
    /* GLOBAL names the class */
    ASSERT_FAILS("\x80\x02" "cdatetime\ndatetime\nq\x00)R.", TBX_EUNSUPPORTED, "datetime.datetime");
    ASSERT_FAILS("\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x07" "decimal\x8c\x07" "Decimal\x93.",
                 TBX_EUNSUPPORTED, "decimal.Decimal");
    ASSERT_FAILS("(icollections\nOrderedDict\n.", TBX_EUNSUPPORTED, "collections.OrderedDict");
    ASSERT_FAILS("\x80\x02K\x01K\x02R.", TBX_EUNSUPPORTED, "REDUCE");
    ASSERT_FAILS("\x80\x02}K\x01" "b.", TBX_EUNSUPPORTED, "BUILD");
    ASSERT_FAILS("\x80\x02K\x01)\x81.", TBX_EUNSUPPORTED, "NEWOBJ");
    ASSERT_FAILS("\x80\x02\x82\x01.", TBX_EUNSUPPORTED, "EXT1");
    ASSERT_FAILS("Pid\n.", TBX_EUNSUPPORTED, "PERSID");
    ASSERT_FAILS("\x80\x05\x97.", TBX_EUNSUPPORTED, "NEXT_BUFFER");
    /* whitelisted builtins, used wrongly or alone */
    ASSERT_FAILS("\x80\x02" "c__builtin__\nset\n.", TBX_EUNSUPPORTED, "class");
    ASSERT_FAILS("\x80\x02" "c__builtin__\nset\nX\x01\x00\x00\x00" "a\x85R.", TBX_EUNSUPPORTED, "REDUCE");
    ASSERT_FAILS("\x80\x02]c__builtin__\nset\na.", TBX_EUNSUPPORTED, "class");
    ASSERT_FAILS("\x80\x02" "c_codecs\nencode\nX\x02\x00\x00\x00\xc4\x80X\x06\x00\x00\x00latin1\x86R.",
                 TBX_EDECODE, "latin-1");
    ASSERT_FAILS("\x80\x02" "c_codecs\nencode\nX\x01\x00\x00\x00" "aX\x05\x00\x00\x00" "ascii\x86R.",
                 TBX_EUNSUPPORTED, "REDUCE");
}
END_TEST

/* ---- limits ------------------------------------------------------------------ */

static unsigned char *nested_lists(size_t depth, size_t *n)
{
    /* PROTO 2, `]` x depth, `a` x (depth-1), STOP */
    unsigned char *b = malloc(2 * depth + 3);
    ck_assert_ptr_nonnull(b);
    size_t k = 0;
    b[k++] = 0x80, b[k++] = 2;
    for (size_t i = 0; i < depth; i++)
        b[k++] = ']';
    for (size_t i = 1; i < depth; i++)
        b[k++] = 'a';
    b[k++] = '.';
    *n = k;
    return b;
}

START_TEST(test_limits)
{
    size_t n;
    json_t *v;
    tbx_error err;
    unsigned char *b = nested_lists(TBX_PICKLE_MAX_DEPTH, &n);
    ck_assert_int_eq(load(b, n, &v, &err), TBX_OK);
    free(b);
    /* the encoder accepts what the decoder produced */
    unsigned char *out;
    size_t outlen;
    ck_assert_int_eq(tbx_pickle_dump(v, &out, &outlen, &err), TBX_OK);
    free(out);
    json_t *deeper = json_array();
    json_array_append_new(deeper, v);
    ck_assert_int_eq(tbx_pickle_dump(deeper, &out, &outlen, &err), TBX_ELIMIT);
    ck_assert_ptr_null(out);
    json_decref(deeper);

    b = nested_lists(TBX_PICKLE_MAX_DEPTH + 1, &n);
    ck_assert_int_eq(load(b, n, &v, &err), TBX_ELIMIT);
    ck_assert_ptr_nonnull(strstr(err.msg, "deeper"));
    free(b);

    /* x0 = [1]; x(i+1) = [xi, xi]: a few bytes per doubling of the expanded tree */
    unsigned char dag[1024];
    size_t k = 0;
    memcpy(dag, "\x80\x02]K\x01" "aq\x00", 8);
    k = 8;
    for (int i = 0; i < 40; i++) {
        dag[k++] = '0';
        dag[k++] = ']';
        dag[k++] = '(';
        dag[k++] = 'h', dag[k++] = (unsigned char)i;
        dag[k++] = 'h', dag[k++] = (unsigned char)i;
        dag[k++] = 'e';
        dag[k++] = 'q', dag[k++] = (unsigned char)(i + 1);
    }
    dag[k++] = '.';
    ck_assert_int_eq(load(dag, k, &v, &err), TBX_ELIMIT);
    ck_assert_ptr_nonnull(strstr(err.msg, "values"));

    /* the same with a shared string: bounded string bytes */
    k = 0;
    memcpy(dag, "\x80\x02X\x00\x01\x00\x00", 7);
    k = 7;
    memset(dag + k, 'x', 256);
    k += 256;
    dag[k++] = 'q', dag[k++] = 0;
    for (int i = 0; i < 40; i++) {
        dag[k++] = '0';
        dag[k++] = ']';
        dag[k++] = '(';
        dag[k++] = 'h', dag[k++] = (unsigned char)i;
        dag[k++] = 'h', dag[k++] = (unsigned char)i;
        dag[k++] = 'e';
        dag[k++] = 'q', dag[k++] = (unsigned char)(i + 1);
    }
    dag[k++] = '.';
    ck_assert_int_eq(load(dag, k, &v, &err), TBX_ELIMIT);
    ck_assert_ptr_nonnull(strstr(err.msg, "bytes"));
}
END_TEST

/* ---- out of memory inside jansson ------------------------------------------------- */

static long alloc_budget = -1; /* allocations left before failing; -1 = unlimited */

static void *failing_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

START_TEST(test_oom)
{
    /* every kind of value, memo, REDUCE, non-str keys: each jansson allocation failing in turn */
    static const char *const names[] = {"nested/p2", "shared_sublist/p5", "nonstr_keys/p2", "set/p2",
                                        "bytearray/p0", "list_mixed/p0"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        size_t n = 0;
        unsigned char *b = NULL;
        for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++)
            if (!strcmp(vectors[i].name, names[k]))
                b = unhex(vectors[i].hex, &n);
        ck_assert_ptr_nonnull(b);
        json_set_alloc_funcs(failing_malloc, free);
        for (long fail_at = 0;; fail_at++) {
            json_t *v;
            tbx_error err;
            alloc_budget = fail_at;
            tbx_status st = tbx_pickle_load(b, n, &v, &err);
            alloc_budget = -1;
            if (st == TBX_OK) {
                json_decref(v);
                break;
            }
            ck_assert_msg(st == TBX_ENOMEM, "%s, failing allocation %ld: %d (%s)", names[k], fail_at, (int)st, err.msg);
            ck_assert_ptr_null(v);
            ck_assert_int_lt(fail_at, 10000);
        }
        json_set_alloc_funcs(malloc, free);
        free(b);
    }
}
END_TEST

/* ---- encoding ------------------------------------------------------------------ */

START_TEST(test_encoder_matches_python)
{
    const struct encvec *t = &enc_vectors[_i];
    json_t *v = parse(t->json);
    unsigned char *out;
    size_t n;
    tbx_error err;
    ck_assert_int_eq(tbx_pickle_dump(v, &out, &n, &err), TBX_OK);
    char *hex = tohex(out, n);
    ck_assert_msg(strcmp(hex, t->hex) == 0, "%s: got %s, want %s", t->name, hex, t->hex);
    free(hex);
    free(out);
    json_decref(v);
}
END_TEST

/* pickletools.optimize(pickle.dumps([None] * n, 2)).hex() for n = 1000, 1001, 2001: APPENDS in
   batches of 1000, a lone last item as APPEND. */
static const struct {
    size_t n;
    const char *hex;
} batch_vectors[] = {
    {1000, "80025d284e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e652e"},
    {1001, "80025d284e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e65284e652e"},
    {2001, "80025d284e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e65284e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e65284e652e"},
};

START_TEST(test_encoder_batches_like_python)
{
    json_t *v = json_array();
    for (size_t i = 0; i < batch_vectors[_i].n; i++)
        json_array_append_new(v, json_null());
    unsigned char *out;
    size_t n;
    ck_assert_int_eq(tbx_pickle_dump(v, &out, &n, NULL), TBX_OK);
    char *hex = tohex(out, n);
    ck_assert_str_eq(hex, batch_vectors[_i].hex);
    free(hex);
    free(out);
    json_decref(v);
}
END_TEST

static const char *const roundtrip_json[] = {
    "null", "true", "false", "0", "-1", "255", "256", "65535", "65536", "-129", "2147483647", "2147483648",
    "-2147483648", "-2147483649", "9223372036854775807", "-9223372036854775808", "4294967296", "-4294967296",
    "1.5", "-0.0", "1e300", "5e-324", "0.1", "\"\"", "\"a\\u0000b\"", "\"\\u00e9\\u65e5\\ud83d\\ude00\"",
    "[]", "{}", "[[[]]]", "{\"\": {\"a\": [1, 2.5, null, {}]}}",
    "{\"exc_type\": \"X\", \"exc_message\": [\"bad\", 1, [2]], \"exc_module\": \"m\"}",
};

START_TEST(test_roundtrip)
{
    json_t *v = parse(roundtrip_json[_i]);
    unsigned char *out;
    size_t n;
    ck_assert_int_eq(tbx_pickle_dump(v, &out, &n, NULL), TBX_OK);
    json_t *back;
    tbx_error err;
    ck_assert_msg(load(out, n, &back, &err) == TBX_OK, "%s: %s", roundtrip_json[_i], err.msg);
    ck_assert_msg(json_equal(v, back), "%s did not round-trip", roundtrip_json[_i]);
    free(out);
    json_decref(back);
    json_decref(v);
}
END_TEST

START_TEST(test_roundtrip_batches)
{
    /* lists and dicts across the 1000-item batch boundary */
    static const size_t sizes[] = {1, 2, 999, 1000, 1001, 2000, 2001, 2500};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        json_t *l = json_array(), *d = json_object();
        for (size_t i = 0; i < sizes[s]; i++) {
            char key[32];
            snprintf(key, sizeof key, "k%zu", i);
            json_array_append_new(l, json_integer((json_int_t)i * 1000003));
            json_object_set_new(d, key, json_real((double)i / 7));
        }
        json_t *both = json_pack("[oo]", l, d);
        unsigned char *out;
        size_t n;
        ck_assert_int_eq(tbx_pickle_dump(both, &out, &n, NULL), TBX_OK);
        json_t *back;
        ck_assert_int_eq(tbx_pickle_load(out, n, &back, NULL), TBX_OK);
        ck_assert(json_equal(both, back));
        /* keys keep their order */
        const char *k0 = json_object_iter_key(json_object_iter(json_array_get(back, 1)));
        ck_assert_str_eq(k0, "k0");
        free(out);
        json_decref(back);
        json_decref(both);
    }
}
END_TEST

START_TEST(test_exception_dict)
{
    unsigned char *out;
    size_t n;
    json_t *back;
    ck_assert_int_eq(tbx_pickle_dump_exception("SoftTimeLimitExceeded", "billiard.exceptions", NULL, &out, &n, NULL),
                     TBX_OK);
    ck_assert_int_eq(tbx_pickle_load(out, n, &back, NULL), TBX_OK);
    json_t *want = parse("{\"exc_type\": \"SoftTimeLimitExceeded\", \"exc_message\": [], "
                         "\"exc_module\": \"billiard.exceptions\"}");
    ck_assert(json_equal(back, want));
    ck_assert_ptr_nonnull(memchr(out, ')', n)); /* EMPTY_TUPLE */
    json_decref(want);
    json_decref(back);
    free(out);

    json_t *args = parse("[\"a\", 2, null, [3], {\"k\": 1.5}]");
    ck_assert_int_eq(tbx_pickle_dump_exception("ExportError", "cworker.errors", args, &out, &n, NULL), TBX_OK);
    ck_assert_int_eq(tbx_pickle_load(out, n, &back, NULL), TBX_OK);
    ck_assert(json_equal(json_object_get(back, "exc_message"), args));
    ck_assert_str_eq(json_object_iter_key(json_object_iter(back)), "exc_type");
    /* a 5-tuple is MARK ... TUPLE, followed by the last key */
    ck_assert(contains(out, n, "tX\x0a\x00\x00\x00" "exc_module", 16));
    json_decref(back);
    free(out);

    tbx_error err;
    ck_assert_int_eq(tbx_pickle_dump_exception(NULL, "m", NULL, &out, &n, &err), TBX_EINVAL);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(tbx_pickle_dump_exception("E", "m", json_array_get(args, 4), &out, &n, &err), TBX_EINVAL);
    ck_assert_int_eq(tbx_pickle_dump_exception("E\xff", "m", NULL, &out, &n, &err), TBX_EINVAL);
    ck_assert_int_eq(tbx_pickle_dump(NULL, &out, &n, &err), TBX_EINVAL);
    json_decref(args);
}
END_TEST

/* ---- optional: Python itself reads what we write --------------------------------- */

#define PYTHON "/usr/bin/python3"

/* repr(pickle.loads(bytes)) as computed by Python, or NULL if Python is unavailable. */
static char *python_repr(const unsigned char *bytes, size_t n)
{
    char path[] = "/tmp/tbx_pickle_testXXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bytes, n), (ssize_t)n);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             PYTHON " -c 'import pickle,sys; sys.stdout.write(repr(pickle.loads(open(sys.argv[1],\"rb\").read())))' %s",
             path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, len = 0;
    char *outp = malloc(cap);
    ck_assert_ptr_nonnull(outp);
    size_t got;
    while ((got = fread(outp + len, 1, cap - 1 - len, p)) > 0)
        len += got;
    outp[len] = '\0';
    int rc = pclose(p);
    unlink(path);
    ck_assert_msg(rc == 0, "python failed on %s", path);
    return outp;
}

START_TEST(test_python_reads_our_pickles)
{
    if (access(PYTHON, X_OK) != 0 || getenv("TOOLBOX_TEST_NO_PYTHON"))
        return; /* optional cross-check */
    unsigned char *out;
    size_t n;
    for (size_t i = 0; i < sizeof roundtrip_json / sizeof roundtrip_json[0]; i++) {
        json_t *v = parse(roundtrip_json[i]);
        ck_assert_int_eq(tbx_pickle_dump(v, &out, &n, NULL), TBX_OK);
        char *py = python_repr(out, n), *ours = tbx_pyrepr(v, 0);
        ck_assert_msg(strcmp(py, ours) == 0, "%s: python %s, pyrepr %s", roundtrip_json[i], py, ours);
        free(py);
        free(ours);
        free(out);
        json_decref(v);
    }
    json_t *args = parse("[\"bad value 7\"]");
    ck_assert_int_eq(tbx_pickle_dump_exception("ValueError", "builtins", args, &out, &n, NULL), TBX_OK);
    char *py = python_repr(out, n);
    ck_assert_str_eq(py, "{'exc_type': 'ValueError', 'exc_message': ('bad value 7',), 'exc_module': 'builtins'}");
    free(py);
    free(out);
    json_decref(args);
    ck_assert_int_eq(tbx_pickle_dump_exception("SoftTimeLimitExceeded", "billiard.exceptions", NULL, &out, &n, NULL),
                     TBX_OK);
    py = python_repr(out, n);
    ck_assert_str_eq(py, "{'exc_type': 'SoftTimeLimitExceeded', 'exc_message': (), 'exc_module': 'billiard.exceptions'}");
    free(py);
    free(out);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tbx_pickle");
    TCase *tc = tcase_create("load");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_python_vectors, 0, (int)(sizeof vectors / sizeof vectors[0]));
    tcase_add_test(tc, test_reference_bytes);
    tcase_add_test(tc, test_shared_memo);
    tcase_add_test(tc, test_recursive_rejected);
    tcase_add_test(tc, test_text_forms);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_python_objects_refused);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_oom);
    suite_add_tcase(s, tc);
    tc = tcase_create("dump");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_encoder_matches_python, 0, (int)(sizeof enc_vectors / sizeof enc_vectors[0]));
    tcase_add_loop_test(tc, test_encoder_batches_like_python, 0, (int)(sizeof batch_vectors / sizeof batch_vectors[0]));
    tcase_add_loop_test(tc, test_roundtrip, 0, (int)(sizeof roundtrip_json / sizeof roundtrip_json[0]));
    tcase_add_test(tc, test_roundtrip_batches);
    tcase_add_test(tc, test_exception_dict);
    tcase_add_test(tc, test_python_reads_our_pickles);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
