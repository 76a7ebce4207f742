# Post-build check of the extension module (cmake -DMODULE=... -DREADELF=... -P check_module.cmake):
# it must use the shared C++ runtime that torch uses, not carry a copy of libstdc++ of its own
# (CMakeLists.txt says how that happens and what it breaks).
execute_process(COMMAND ${READELF} -W --dyn-syms ${MODULE} OUTPUT_VARIABLE syms RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${READELF} --dyn-syms ${MODULE} failed (${rc})")
endif()
# Defined (section index not UND) symbols of libstdc++'s locale, iostreams and ABI support.
string(REGEX MATCH " [0-9]+ (_ZNSt6locale[^ \n]*|_ZTIN10__cxxabiv1[^ \n]*|_ZNSo9_M_insert[^ \n]*)" own "${syms}")
if(own)
  message(FATAL_ERROR "${MODULE} defines libstdc++'s own symbols (e.g. ${CMAKE_MATCH_1}): it was linked against "
                      "libstdc++.a, and its error messages would crash the process. Link the shared libstdc++.")
endif()
