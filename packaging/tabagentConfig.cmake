# CMake package config for libtabagent, installed by `make install` into
# <prefix>/lib/cmake/tabagent. Use:
#   find_package(tabagent REQUIRED)
#   target_link_libraries(app PRIVATE tabagent::tabagent)         # shared library
#   target_link_libraries(app PRIVATE tabagent::tabagent_static)  # static archive
get_filename_component(_tabagent_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(APPLE)
  set(_tabagent_shared "${_tabagent_prefix}/lib/libtabagent.dylib")
else()
  set(_tabagent_shared "${_tabagent_prefix}/lib/libtabagent.so")
endif()
if(NOT TARGET tabagent::tabagent)
  add_library(tabagent::tabagent SHARED IMPORTED)
  set_target_properties(tabagent::tabagent PROPERTIES
    IMPORTED_LOCATION "${_tabagent_shared}"
    INTERFACE_INCLUDE_DIRECTORIES "${_tabagent_prefix}/include")
endif()
if(NOT TARGET tabagent::tabagent_static)
  add_library(tabagent::tabagent_static STATIC IMPORTED)
  # The same list as Libs.private in tabagent.pc: llama.cpp and ggml stay shared
  # (the CPU variants load into them), and llama.cpp is C++.
  set(_tabagent_lib "${_tabagent_prefix}/lib")
  set_target_properties(tabagent::tabagent_static PROPERTIES
    IMPORTED_LOCATION "${_tabagent_lib}/libtabagent.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_tabagent_prefix}/include"
    INTERFACE_LINK_LIBRARIES "${_tabagent_lib}/libllama.so;${_tabagent_lib}/libggml.so;${_tabagent_lib}/libggml-base.so;stdc++;gcc_s;util;rt;pthread;m;dl")
  unset(_tabagent_lib)
endif()
unset(_tabagent_prefix)
unset(_tabagent_shared)
